"""Typed errors that map to the exit codes of the user-facing contract."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1  # a bug, or storage that failed after retries
EXIT_USAGE = 2  # usage or configuration: unknown dataset, bad YAML, bad flag, unreachable lake
EXIT_POLICY = 3  # refused by policy: incompatible schema, a rule set to `fail`, a lock held


class LakeshardError(Exception):
    """An error with a one-line message for the user and the exit code it maps to."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = " ".join(message.split())  # one line, always


class ConfigError(LakeshardError):
    """Bad flags, dataset declarations, environment, or an unreachable lake."""

    exit_code = EXIT_USAGE


class PolicyError(LakeshardError):
    """A run refused by a declared policy."""

    exit_code = EXIT_POLICY


class StorageError(LakeshardError):
    """Storage that failed after the client's own retries."""

    exit_code = EXIT_FAILURE
