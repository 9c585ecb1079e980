"""Errors `mlops up`, `status` and `down` explain in one line (no traceback)."""

from __future__ import annotations


class PlatformError(RuntimeError):
    """A failure of `up` that is explained by its message."""


class PrerequisiteError(RuntimeError):
    """A tool the local platform needs is missing; the message says how to get it."""


class PortInUseError(PrerequisiteError):
    pass
