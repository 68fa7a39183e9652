"""One exception type for everything a user can get wrong; the CLI prints it as one line."""
from pathlib import Path


class TagfaceError(Exception):
    """Bad input: the message names the input and what is allowed."""


def read_user_text(path: str | Path) -> str:
    """A text file the user wrote (tags, recipes): UTF-8, with or without the byte-order mark spreadsheets add."""
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise TagfaceError(f"{path} is not UTF-8 text (byte {err.start} is 0x{err.object[err.start]:02x}); "
                           "save it as UTF-8 CSV or plain text") from None
