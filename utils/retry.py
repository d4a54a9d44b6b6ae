"""Bounded exponential backoff for pymongo's transient errors (applied by amend_store.AmendStore, once
per database operation)."""

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from pymongo.errors import AutoReconnect, PyMongoError, WriteConcernError

log = logging.getLogger("drs_amend.retry")
Result = TypeVar("Result")


def is_transient(error: Exception) -> bool:
    """AutoReconnect (NetworkTimeout, ServerSelectionTimeoutError), WriteConcernError, RetryableWriteError."""
    return isinstance(error, (AutoReconnect, WriteConcernError)) or (
        isinstance(error, PyMongoError) and error.has_error_label("RetryableWriteError"))


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    initial_delay_seconds: float = 0.5
    max_delay_seconds: float = 8.0

    def delays(self) -> Iterator[float]:
        """The pause before each retry: initial, doubled each time, capped."""
        delay = self.initial_delay_seconds
        for _ in range(self.attempts - 1):
            yield min(delay, self.max_delay_seconds)
            delay *= 2

    def call(self, operation: Callable[[], Result], what: str,
             sleep: Callable[[float], None] = time.sleep) -> Result:
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
