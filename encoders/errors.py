"""The one root of user errors: every ``polyclip`` command prints such an error as one line and
exits with status 2; anything else is a bug and keeps its traceback."""

from __future__ import annotations


class PolyclipError(ValueError):
    """Something the user can fix (a path, a setting, an input); the message says what and how."""


class EncoderError(PolyclipError):
    """A model directory, hub id or input that cannot be used; the message says why."""
