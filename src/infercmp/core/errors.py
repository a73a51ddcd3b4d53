"""The exception types the CLI turns into one clear line and an exit code."""

from __future__ import annotations


class InfercmpError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""

    exit_code = 2


class RunFailed(InfercmpError):
    """A run that started but could not finish: exit code 1."""

    exit_code = 1


class NothingRan(InfercmpError):
    """A run in which nothing could be measured here (every combination skipped): exit 3."""

    exit_code = 3


class MissingDependency(InfercmpError):
    """An optional module is not installed; the message names the extra that provides it."""
