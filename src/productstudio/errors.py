"""The user's mistakes, as opposed to bugs.

Every problem a user can fix (a bad params.yaml, data that fails validation, a missing input, a bad
request) is a ``UserError``: the CLI prints it as one line and exits non-zero. Any other exception is a
bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix; its message is one line that says what and how."""

    exit_code = 2

    def one_line(self, command: str) -> str:
        """How a door shows it: ``<command>: error: <message>``."""
        return f"{command}: error: {self}"


class ParamsError(UserError, ValueError):
    """A bad setting (a params.yaml value or a command-line flag), phrased as a single line for the terminal."""


class MissingInput(UserError, FileNotFoundError):
    """An input file or directory a step needs is not there (run the step that makes it first)."""


class DataError(UserError, ValueError):
    """Data that cannot be used as it is (a checksum mismatch, an unvalidated dataset, a bad file)."""


class ValidationFailed(UserError):
    """The Great Expectations suite failed; the message is the summary."""

    exit_code = 1

    def one_line(self, command: str) -> str:
        return str(self)  # the suite's summary says what failed and where the report is


class ServiceError(UserError, RuntimeError):
    """A tool or service a step relies on (nginx, TorchServe, DVC, a download) is missing, already running,
    or failed; the message says which and where its log is."""


class DiskFull(UserError, OSError):
    """No space left on the device while writing an artifact; the message names the file and says that what was
    there before is intact (``artifacts.write_atomic`` and ``artifacts.staged_directory`` make sure it is)."""


class BadRequest(UserError, ValueError):
    """A request a served model or the registry refuses; carries an HTTP status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class TimeLimitReached(UserError):
    """Training reached its optional wall-clock guard (train.max_minutes) before its step budget: it stops
    loudly rather than ship a shorter run; the checkpoint is kept, so a rerun with a larger guard continues."""


class TrainingDiverged(UserError):
    """A training step's losses became NaN or infinite: the run stops there instead of training on (every later
    step would be NaN too) and saving a broken generator; the checkpoints written before it are kept."""
