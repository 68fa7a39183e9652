"""One exception type for everything a user can get wrong; the CLI prints it as one line."""


class TagfaceError(Exception):
    """Bad input: the message names the input and what is allowed."""
