"""Errors the core raises. Every message says what was wrong and what to change."""


class EverAnimateError(ValueError):
    """Base class: a problem the user can fix by changing an input or a setting."""


class ConfigError(EverAnimateError):
    """A chunk/anchor/resolution setting that cannot work (e.g. frames per chunk not 1 mod 4)."""


class DrivingVideoError(EverAnimateError):
    """The driving (pose/face) video is empty, too short for strict mode, or inconsistent."""


class ResumeStateError(EverAnimateError):
    """A resume checkpoint is missing, corrupted, truncated, or from another configuration."""


class NonFiniteError(EverAnimateError):
    """A chunk produced NaN or inf; finished chunks are kept, the run stops at this chunk."""

    def __init__(self, message: str, chunk_index: int):
        super().__init__(message)
        self.chunk_index = chunk_index
