"""Errors a user can fix. Their messages name the file, key, line or sample and say how to
fix it; a rule's job prints them as one line (no traceback) and exits 1."""

from __future__ import annotations


class MscflowError(Exception):
    """An input or setting the user can fix; the message says what and how."""


class ConfigError(MscflowError, ValueError):
    """The configuration is unusable; the message names the key and the fix."""


class SampleSheetError(MscflowError, ValueError):
    """The sample sheet is unusable; the message names the file, line, sample and column."""


class InputDataError(MscflowError, ValueError):
    """A sample's data cannot be used; the message names the sample, the file and the fix."""


class DiskFullError(MscflowError, OSError):
    """A result could not be written for lack of space; the message names the path, the
    bytes written before it failed and the space left."""
