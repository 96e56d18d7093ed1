"""One root exception for everything runtools raises on purpose.

CLIs map the branches to exit codes in one place (`runtools.cli.common`).
"""

from __future__ import annotations


class RuntoolsError(Exception):
    """Something went wrong in runtools."""

    exit_code = 1

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class UsageError(RuntoolsError):
    """Invalid input: fix the arguments and try again."""

    exit_code = 2


class NotFoundError(RuntoolsError):
    """No such run, job or run key."""

    exit_code = 3


class StateError(RuntoolsError):
    """The run is not in a state that allows this."""

    exit_code = 4


class BackendError(RuntoolsError):
    """The environment's storage could not be used."""

    exit_code = 5
