"""One exception type for everything a user can cause.

A ``LabError`` ends a command with one clear line on stderr and exit code 2 (see ``cli.Guard``),
never a traceback. Raise it with a message that names the file, flag or value at fault.
"""


class LabError(Exception):
    """A problem the user can fix: a bad flag, a missing or corrupt file, no network."""

    exit_code = 2


class NothingToDo(LabError):
    """The command would add nothing (a resume of a run that already went as far as asked): it
    says so in one line and ends with exit code 0, having written nothing."""

    exit_code = 0


class NonFiniteLossError(LabError):
    """The loss became NaN or infinite; training stopped before anything good was overwritten."""


def one_line(exc: BaseException) -> str:
    """An exception's message as the one line the promise allows (its first non-empty line)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
