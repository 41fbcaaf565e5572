"""User-facing errors. The CLI prints them as one line and exits with code 2."""

from __future__ import annotations


class LmadaptError(Exception):
    """An error caused by the user's input (config, data, paths), not by a bug."""


class ConfigError(LmadaptError):
    """A config file or command-line override is invalid."""


class DataError(LmadaptError):
    """A data record is invalid. The message names the file, line (1-based) and field."""

    def __init__(self, path: str, line: int | None, field: str | None, message: str):
        self.path, self.line, self.field, self.message = str(path), line, field, message
        where = self.path if line is None else f"{self.path}:{line}"
        what = f" field '{field}':" if field else ""
        super().__init__(f"{where}:{what} {message}")


class Interrupted(LmadaptError):
    """Training stopped by Ctrl-C; the message says where it stopped and how to continue."""


class Preempted(LmadaptError):
    """Training stopped on request (SIGTERM, Ctrl-C) after writing a checkpoint; --resume continues."""
