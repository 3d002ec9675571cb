"""One exception type for user-facing errors; the CLI prints it as a single line."""


class VFMTokError(Exception):
    """A problem with the user's input (file, shape, config); shown without a traceback."""


def require(cond: bool, message: str) -> None:
    """Raise VFMTokError(message) unless cond holds."""
    if not cond:
        raise VFMTokError(message)
