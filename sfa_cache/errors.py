"""Project exceptions.

`SfaError` is a *user* mistake or a bad input: the CLI prints its message on one line and exits
non-zero without a traceback. Anything else is a bug and keeps its traceback.
"""


class SfaError(Exception):
    """A problem the user can fix (bad path, bad option, incompatible run...)."""


class VideoReadError(SfaError):
    """A video that cannot be opened or decoded. Carries the path and the reason."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"cannot read video {path}: {reason}")
        self.path = str(path)
        self.reason = reason


def first_line(e: BaseException, limit: int = 300) -> str:
    """An exception's message cut to its first line (FFmpeg, HDF5 and tarfile errors run long)."""
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:limit]
