"""User-facing errors. Every error a user can cause derives from LatentSyncError; its message is written
for a person (what is wrong and what to do), so callers can show it without a traceback."""


class LatentSyncError(Exception):
    """Base class of every error that is meant to be shown to a user."""


class MissingWeightsError(LatentSyncError, FileNotFoundError):
    """Model weights were not found; the message names every path searched and how to get them."""


class CheckpointMismatchError(LatentSyncError):
    """A checkpoint does not fit the model built from the chosen config (strict key/shape check)."""


class InputError(LatentSyncError, ValueError):
    """The frames, audio or file given to the library are unusable."""


class NoFaceError(LatentSyncError):
    """No usable face was found and the caller asked for strict face handling."""


class CancelledError(LatentSyncError):
    """The job was cancelled by its caller (e.g. ComfyUI's interrupt)."""
