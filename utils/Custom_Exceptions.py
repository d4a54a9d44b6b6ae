"""The named exceptions of the job. Every message is meant to be read by an operator."""


class TaskProcessingError(Exception):
    """Base class of every error the job raises on purpose."""


class ConfigurationError(TaskProcessingError):
    """A configuration file, setting or command-line argument is missing or invalid."""


class DatabaseConnectionError(TaskProcessingError):
    """The database cannot be reached or opened."""


class TaskValidationError(TaskProcessingError):
    """A task, its template, its amend request or its cases are not valid."""


class ResourceBalanceError(TaskProcessingError):
    """The requested amend breaks a balancing rule."""


class DatabaseUpdateError(TaskProcessingError):
    """A write to the database failed or did not match what was expected."""


class BatchBusyError(TaskProcessingError):
    """Another task is amending the same batch; this one waits for a later run."""


class ClaimLostError(TaskProcessingError):
    """The task's claim expired and another run took it over; this run must not touch it again."""


class FullReadNeeded(Exception):  # noqa: N818 - a signal to read the batch whole, not an error anybody sees
    """The push-down read cannot vouch for a batch's plan (a case the job would refuse, amounts the server
    cannot sum exactly, a duplicated Case_Id...): the batch is read whole instead, and that read decides.
    Caught where the batch is read; never a task's outcome."""
