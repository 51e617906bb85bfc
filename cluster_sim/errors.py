"""The project's small exception tree.

Every error a user can cause by input is a ``ConfigError``: the CLI turns it into exit status 2
before any compute is spent. Failures during a run are ``RunError`` (exit status 1).
"""
from __future__ import annotations


class ConfigError(ValueError):
    """Bad input: names the key, the value and the fix."""

    def __init__(self, key: str, value: object, problem: str, fix: str = "") -> None:
        self.key, self.value, self.problem, self.fix = key, value, problem, fix
        msg = f"{key} = {value!r}: {problem}"
        if fix:
            msg += f" (fix: {fix})"
        super().__init__(msg)


class IncompatibleSolverError(ConfigError):
    """The integrator cannot be used with the model or mode asked for."""


class RunError(RuntimeError):
    """A run failed after it started (numerical blow-up, I/O failure, a peer rank died)."""


class SubmissionError(RuntimeError):
    """sbatch (or another scheduler command) refused or failed."""


class JobFailedError(RuntimeError):
    """A scheduler job ended in a failure state; the message carries the log tail."""


# Exit statuses of ``cluster-sim run`` (documented in the README).
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_CHECKPOINTED = 75  # EX_TEMPFAIL: stopped by SIGTERM/SIGUSR1 after writing a checkpoint; requeue me
