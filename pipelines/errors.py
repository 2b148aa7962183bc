"""Typed errors that map to the exit codes of the user-facing contract."""

from __future__ import annotations

import threading

EXIT_OK = 0
EXIT_FAILURE = 1  # a bug, or storage that failed after retries
EXIT_USAGE = 2  # usage or configuration: unknown dataset, bad YAML, bad flag, unreachable lake
EXIT_POLICY = 3  # refused by policy: incompatible schema, a rule set to `fail`, a lock held
EXIT_TERMINATED = 143  # stopped by SIGTERM (128 + 15), as shells report it


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an error's message (the JVM's, for a Spark error)."""
    java = getattr(exc, "java_exception", None)
    text = str(java.toString()) if java is not None else str(exc)
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def describe(exc: BaseException) -> str:
    """``Type: first line`` of an unexpected error, short enough for a log or run record."""
    return f"{type(exc).__name__}: {first_line(exc)[:400]}"


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


class DamagedLake(StorageError):
    """A lake object that is missing or unreadable where it must not be: a truncated Delta
    commit, a corrupt checkpoint, a data file deleted behind Delta's back, a missing ledger or
    run log. The message names the object and what to do."""


class Terminated(LakeshardError):
    """The process was asked to stop (SIGTERM): the run is recorded as failed and lets go."""

    exit_code = EXIT_TERMINATED


_STOP = threading.Event()


def request_stop() -> None:
    """Ask the running command to stop at its next checkpoint (from a signal handler)."""
    _STOP.set()


def clear_stop() -> None:
    _STOP.clear()


def stop_requested() -> bool:
    return _STOP.is_set()


def raise_if_stopped() -> None:
    if _STOP.is_set():
        raise Terminated("terminated (SIGTERM)")
