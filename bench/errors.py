"""Exceptions that the CLI turns into one-paragraph messages and exit codes."""


class BenchError(Exception):
    """A failure the user can act on; the CLI prints it without a traceback (exit 1)."""

    exit_code = 1


class InputError(BenchError):
    """Bad input: a scenario, an argument or a path (exit 2)."""

    exit_code = 2


class RuntimeUnavailable(BenchError):
    """A runtime cannot be used on this host; the message says how to fix it."""


class CgroupError(BenchError):
    """A cgroup could not be created, written or read."""
