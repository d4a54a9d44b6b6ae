"""Bounded exponential backoff for pymongo's transient errors, and a database wrapper applying it."""

import logging
import time
from dataclasses import dataclass

from pymongo.errors import AutoReconnect, PyMongoError, WriteConcernError

log = logging.getLogger("drs_amend.retry")

# Single commands whose retry is safe: every write of the job is idempotent (see update_databases).
RETRIED_METHODS = frozenset({"find_one", "count_documents", "find_one_and_update", "update_one", "update_many",
                             "bulk_write", "replace_one", "delete_one", "delete_many", "insert_one", "insert_many"})


def is_transient(error):
    """AutoReconnect (NetworkTimeout, ServerSelectionTimeoutError), WriteConcernError, RetryableWriteError."""
    return isinstance(error, (AutoReconnect, WriteConcernError)) or (
        isinstance(error, PyMongoError) and error.has_error_label("RetryableWriteError"))


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    initial_delay_seconds: float = 0.5
    max_delay_seconds: float = 8.0

    def delays(self):
        """The pause before each retry: initial, doubled each time, capped."""
        delay = self.initial_delay_seconds
        for _ in range(self.attempts - 1):
            yield min(delay, self.max_delay_seconds)
            delay *= 2

    def call(self, operation, what, sleep=time.sleep):
        """Run `operation`; on a transient error wait and run it again, at most `attempts` times in all."""
        pauses = self.delays()
        while True:
            try:
                return operation()
            except PyMongoError as error:
                if not is_transient(error):
                    raise
                pause = next(pauses, None)
                if pause is None:
                    raise
                log.warning("%s: transient %s (%s); retrying in %.2f s", what, type(error).__name__, error, pause)
                sleep(pause)


class RetryingCollection:
    def __init__(self, collection, policy, sleep):
        self._collection = collection
        self._policy = policy
        self._sleep = sleep

    @property
    def name(self):
        return self._collection.name

    def __getattr__(self, attribute):
        method = getattr(self._collection, attribute)
        if attribute not in RETRIED_METHODS:
            return method
        what = f"{self._collection.name}.{attribute}"
        return lambda *args, **kwargs: self._policy.call(lambda: method(*args, **kwargs), what, self._sleep)


class RetryingDatabase:
    """`db[name]` gives a collection whose single commands are retried by `policy`.

    Cursors (find) are not retried here: a read phase is retried as a whole by its caller.
    """

    def __init__(self, database, policy, sleep=time.sleep):
        self._database = database
        self._policy = policy
        self._sleep = sleep

    def __getitem__(self, name):
        return RetryingCollection(self._database[name], self._policy, self._sleep)

    def retry(self, operation, what):
        return self._policy.call(operation, what, self._sleep)
