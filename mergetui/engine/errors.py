"""Errors that are the user's to fix: shown as a short message, never as a traceback."""

from __future__ import annotations


class MergeError(Exception):
    """A problem with the user's input: config, model, files or disk. Exit code 2."""

    exit_code = 2

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        self.message = message
        self.fix = fix
        super().__init__(message if not fix else f"{message}\n  fix: {fix}")


class ConfigError(MergeError):
    """The merge config is malformed or asks for something impossible."""


class ModelError(MergeError):
    """A model reference cannot be resolved or its files are unusable."""


class ShapeMismatchError(MergeError):
    """Tensors that must be merged together have different shapes."""


class DiskSpaceError(MergeError):
    """Not enough free disk for the output."""


class MergeCancelled(Exception):
    """The merge was cancelled (signal or user action)."""
