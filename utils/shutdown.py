"""Stopping a run between two tasks: on the first SIGTERM or Ctrl-C, or when its time is up.

A task in hand is never abandoned by a process that is still alive: it is finished (or undone,
as any failed task is), the run claims no new task, records itself and exits. A second signal
stops the script at once, as a crash does (see README, "Crash recovery").
"""

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import NoReturn

from utils.cli import Interrupted

MINUTE = 60


class StopRequest:
    """Whether a run may still claim a task: not after a signal, nor after `max_minutes` from its start."""

    def __init__(self, max_minutes: int | None = None, clock: Callable[[], float] = time.monotonic):
        self.max_minutes = max_minutes
        self._deadline = None if max_minutes is None else clock() + max_minutes * MINUTE
        self._clock = clock
        self.signal_number: int | None = None
        self.working = False  # set once the run has its database: before, a signal stops it at once

    def start_working(self) -> None:
        self.working = True

    def reason(self) -> str | None:
        """Why no new task may be claimed now, or None when one may."""
        if self.signal_number is not None:
            return f"stopped by {signal.Signals(self.signal_number).name}"
        if self._deadline is not None and self._clock() >= self._deadline:
            return f"time limit of {self.max_minutes} minute(s) reached"
        return None


NO_STOP = StopRequest()  # for callers without signals or a time limit: tests, benchmarks


def _stop_at_once(signal_number: int) -> NoReturn:
    if signal_number == signal.SIGINT:
        raise KeyboardInterrupt
    raise Interrupted(signal_number)


@contextmanager
def stopping_between_tasks(request: StopRequest, log: logging.Logger) -> Iterator[None]:
    """For the block: once `request` is working, the first SIGTERM or SIGINT is noted in it (the run
    finishes the task in hand, claims no new one and saves its work); before that (while it waits
    for the lock or loads the data) and at a second signal, the script stops at once. Outside the
    main thread, where Python cannot set signal handlers, the block runs with the handlers it has."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def note_or_stop(signal_number: int, _frame: FrameType | None) -> None:
        if request.signal_number is not None or not request.working:
            _stop_at_once(signal_number)
        request.signal_number = signal_number
        log.warning("%s received: the task in hand is finished, no new task is claimed, then the run ends "
                    "(send it again to stop at once)", signal.Signals(signal_number).name)

    previous = {number: signal.signal(number, note_or_stop) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
