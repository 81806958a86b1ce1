"""Errors a user can cause: reported as one line naming the key or file, never as a traceback."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's config, paths or data. `exit_code` 2 is for config/usage errors."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class ConfigError(UserError):
    """A config key with a bad value; the message starts with the dotted key path."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}" if key else message, exit_code=2)
        self.key = key


class DataError(UserError):
    """A dataset file or record that cannot be used; the message names the file (and line)."""
