"""How a script stops on SIGTERM or Ctrl-C (SIGINT), and how a run stops between two tasks.

A signal handler records the signal: SignalRecord.record adds one to a counter and keeps the
signal's number; it never writes, logs or saves anything. The main flow acts on the record at
its check points, and logs there. What a signal does depends on the phase the flow has declared
(SignalRecord.enter):

- PREPARING, nothing in hand: reading the arguments and the configuration, the confirmation
  prompt of database_update.py, generating a batch, a command that only reads, a dry run. A
  signal stops the script at once. Only here and in COMMITTED, where nothing can be left half
  done, does the handler also raise Interrupted itself, so that code with no check point (the
  prompt, a read or a write that blocks) ends too. A raise that lands where it is swallowed (a
  `__del__`, a library's `except BaseException`) is still in the record: the next check point
  stops the script (and Python's "Exception ignored" report of it is left out).
- HOLDING, work in hand: from the wait for the embedded file's lock (main.py: from its
  connection) until the work is saved. The handler only records; the next check point stops
  the script at once: every 0.05 s of the lock wait, every chunk of the load and of the save,
  and just before the saved file replaces the old one. Nothing of the script is saved on the
  embedded default.
- WORKING, main.py once its database is loaded: the first signal asks the run to stop between
  tasks (StopRequest). The run logs it at its next check point, finishes the task in hand,
  claims no other, records itself as stopped by that signal and exits 128 + its number. A
  second signal stops it at its next check point, as in HOLDING: before every database
  operation (so a task is left between two commands, as a crash leaves it), every 0.1 s of a
  retry's pause, every chunk of the save.
- COMMITTED, the work is saved and the exit code decided (main.py once its run is recorded;
  every script once its main returned): a signal changes neither. The first one lets the
  script finish its output (main.py logs that it came after the run was recorded); a second
  one, raised by the handler as the output may be blocked on a full pipe, ends the output at
  once with one line on stderr, and the script still exits with the code it had decided.

No check point runs between the commit itself (the rename of the saved file, the insert of
the run's record) and the flow's declaring COMMITTED: a signal in between is only recorded,
and then handled as in COMMITTED. So the exit code, the last line and the saved record agree
whenever a signal comes.
"""

import enum
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

MINUTE = 60
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# How often a pause (a retry's) looks for a stop request: a second signal takes effect within this.
CHECK_INTERVAL_SECONDS = 0.1

log = logging.getLogger("drs_amend.shutdown")


class Interrupted(BaseException):
    """A signal stopped the script at once: unwinds like Ctrl-C's KeyboardInterrupt, so nothing half done is
    saved. Raised at a check point of the main flow, or by the handler where nothing is at stake."""

    def __init__(self, signal_number: int):
        super().__init__(signal_number)
        self.signal_number = signal_number


class Phase(enum.Enum):
    """What the script holds, which decides what a signal does (see the module's docstring)."""
    PREPARING = "nothing in hand"
    HOLDING = "work in hand"
    WORKING = "a run's tasks"
    COMMITTED = "work saved, exit code decided"
    EXITING = "the process ends"


# Per phase: how many signals do not stop the script at once, and whether the handler raises beyond them.
_RULES = {Phase.PREPARING: (0, True), Phase.HOLDING: (0, False), Phase.WORKING: (1, False),
          Phase.COMMITTED: (1, True), Phase.EXITING: (1, False)}


class SignalRecord:
    """The SIGINT and SIGTERM a script received, as its handler records them, and its phase."""

    def __init__(self) -> None:
        self.count = 0
        self.first: int | None = None
        self.last: int | None = None
        self.stopped_for = 0  # the signals the flow already stopped for (and said so)
        self.exit_code: int | None = None  # decided once the work is committed
        self.phase = Phase.PREPARING
        self._rule = _RULES[self.phase]

    def record(self, signal_number: int, _frame: FrameType | None) -> None:
        """The signal handler: it counts the signal and keeps its number, nothing more (no I/O, no logging);
        only where nothing is at stake does it raise Interrupted, once the phase allows no more signals."""
        self.count += 1
        self.last = signal_number
        if self.first is None:
            self.first = signal_number
        tolerated, handler_raises = self._rule
        if handler_raises and self.count > tolerated:
            raise Interrupted(signal_number)

    def enter(self, phase: Phase) -> None:
        self.phase = phase
        self._rule = _RULES[phase]  # one assignment: the handler never sees half a change

    def commit(self, exit_code: int) -> None:
        """The work is saved and recorded, the script's exit code decided: a signal changes neither now."""
        self.exit_code = exit_code
        self.enter(Phase.COMMITTED)

    def stop_due(self) -> bool:
        """Whether a recorded signal asks the script to stop at once, and it has not stopped for it yet."""
        return self.count > max(self._rule[0], self.stopped_for)

    def check(self) -> None:
        """A check point: Interrupted when a recorded signal asks the script to stop at once."""
        if self.last is not None and self.stop_due():
            raise Interrupted(self.last)

    def stopped(self) -> None:
        """The flow caught Interrupted and stopped for the signals so far (it said so): a later check point
        waits for a new one. (Not the handler's business: a raise of its may be swallowed.)"""
        self.stopped_for = self.count


_installed: SignalRecord | None = None  # the record this process's handlers write to


@contextmanager
def recording_signals(keep_installed: bool = False) -> Iterator[SignalRecord]:
    """SIGINT and SIGTERM recorded, for the block, in the record this yields: the one installed already
    when there is one (run_script's, around a script's main), else a new one, whose handlers the block
    installs and then gives the previous ones back, unless `keep_installed` (the process ends with the
    block). Outside the main thread, where Python cannot set handlers, the record receives no signal.
    An Interrupted that Python cannot raise (in a `__del__`) is not reported: the record has it."""
    global _installed
    if threading.current_thread() is not threading.main_thread():
        yield SignalRecord()
        return
    if _installed is not None:
        yield _installed
        return
    record = SignalRecord()
    previous = {number: signal.signal(number, record.record) for number in STOP_SIGNALS}
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _unreported_if_interrupted(previous_hook)
    _installed = record
    try:
        yield record
    finally:
        if not keep_installed:
            _installed = None
            sys.unraisablehook = previous_hook
            for number, handler in previous.items():
                signal.signal(number, handler)


def _unreported_if_interrupted(report: Callable[[Any], object]) -> Callable[[Any], None]:
    def unraisable(details: Any) -> None:
        if not isinstance(details.exc_value, Interrupted):
            report(details)
    return unraisable


def check_point() -> None:
    """A check point of code a script runs (the embedded file's lock wait, load and save): Interrupted
    when a recorded signal asks the script to stop at once; nothing outside recording_signals."""
    if _installed is not None:
        _installed.check()


def stop_requested() -> bool:
    """Whether a recorded signal asks the script to stop at once (for waits that poll: the lock's)."""
    return _installed is not None and _installed.stop_due()


def work_in_hand() -> None:
    """The script starts work a stop must not leave half done (it takes the embedded file's lock): from now
    on a signal is only recorded, and stops it at the next check point."""
    if _installed is not None and _installed.phase is Phase.PREPARING:
        _installed.enter(Phase.HOLDING)


class StopRequest:
    """Whether a run may still claim a task: not after a signal, nor after `max_minutes` from its start.

    `signals` is the script's record: the run reads it at its check points (check, reason, pause),
    never in the signal handler, and logs the first signal there."""

    def __init__(self, max_minutes: int | None = None, clock: Callable[[], float] = time.monotonic,
                 signals: SignalRecord | None = None, sleep: Callable[[float], None] = time.sleep):
        self.max_minutes = max_minutes
        self._deadline = None if max_minutes is None else clock() + max_minutes * MINUTE
        self._clock = clock
        self._signals = signals
        self._sleep = sleep
        self.signal_number: int | None = None  # the signal that asked the run to stop, once a check point saw it

    def start_working(self) -> None:
        """The run has its database: a signal that came while it waited for it stops it now; from now on the
        first one asks it to stop between tasks, a second one stops it at once."""
        if self._signals is not None:
            self._signals.check()
            self._signals.enter(Phase.WORKING)

    def check(self) -> None:
        """A check point of the run: Interrupted when a signal asks it to stop at once; the first signal
        while it works is logged here and kept as `signal_number`."""
        if self._signals is None:
            return
        self._signals.check()
        if self.signal_number is None and self._signals.first is not None:
            self.signal_number = self._signals.first
            log.warning("%s received: the task in hand is finished, no new task is claimed, then the run ends "
                        "(send it again to stop at once)", signal.Signals(self.signal_number).name)

    def reason(self) -> str | None:
        """Why no new task may be claimed now, or None when one may (a check point too)."""
        self.check()
        if self.signal_number is not None:
            return f"stopped by {signal.Signals(self.signal_number).name}"
        if self._deadline is not None and self._clock() >= self._deadline:
            return f"time limit of {self.max_minutes} minute(s) reached"
        return None

    def pause(self, seconds: float) -> None:
        """Sleep `seconds` (a retry's pause), with a check point every CHECK_INTERVAL_SECONDS."""
        remaining = seconds
        while remaining > 0:
            step = min(remaining, CHECK_INTERVAL_SECONDS)
            self._sleep(step)
            remaining -= step
            self.check()


NO_STOP = StopRequest()  # for callers without signals or a time limit: tests, benchmarks
