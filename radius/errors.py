"""Errors that the CLI turns into a message and exit code 2 (bad input)."""

from __future__ import annotations

__all__ = ["RadiusError", "DataError", "CheckpointError"]


class RadiusError(ValueError):
    """Bad input from the user: the CLI prints the message and exits with code 2."""


class DataError(RadiusError):
    """A data file or prepared dataset that cannot be used (names file, line, value)."""


class CheckpointError(RadiusError):
    """A checkpoint that is missing, corrupt or belongs to other data."""
