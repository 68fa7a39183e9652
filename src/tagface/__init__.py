"""tagface: anime character faces from text tags."""
from .errors import TagfaceError
from .tags import EYE_COLOURS, HAIR_COLOURS, Tags, parse_tags

__version__ = "0.1.0"
__all__ = ["TagfaceError", "HAIR_COLOURS", "EYE_COLOURS", "Tags", "parse_tags", "__version__"]
