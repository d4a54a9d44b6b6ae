"""What the three scripts share on the command line: one-line argument errors, bounded integer
options, and Ctrl-C / SIGTERM ending a script with one line instead of a traceback (what a signal
does in each phase of a script: utils/shutdown.py)."""

import argparse
import enum
import os
import signal
import sys
import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NoReturn

from utils.documents import INT64_MAX
from utils.one_line import one_line

# Interrupted is caught here, and by the tests, as utils.cli.Interrupted.
from utils.shutdown import STOP_SIGNALS, Interrupted, Phase, SignalRecord, recording_signals

INT64_MIN = -INT64_MAX - 1


class ExitStatus(enum.IntEnum):
    """The exit codes of main.py, database_update.py and batch_monitor.py (but check, whose exit code is its
    state: ops/monitoring.State)."""
    OK = 0
    TASK_ERROR = 1  # main.py: a task ended in error (--dry-run: would be refused)
    REFUSED = 1  # database_update.py: no confirmation to delete
    SETUP_ERROR = 2  # a configuration, connection, database or command-line error
    AUDIT_INCOMPLETE = 3  # batch_monitor.py audit: no mismatch, but a batch could not be audited


OUTPUT_CLOSED = 128 + signal.SIGPIPE
NOTHING_CHANGED = "nothing was changed"
# What a stop at once leaves behind: one text whatever the phase, or one per phase the script may be stopped in
# (utils/shutdown.Phase); a phase it leaves out is one before the script's work began: nothing was changed.
Consequence = str | Mapping[Phase, str]


class StoppedBeforeWork(Interrupted):
    """A signal stopped the script before its work began (at a confirmation question, say): the line says that
    nothing was changed, whatever a stop of the script leaves otherwise."""


def consequence_of(consequence: Consequence, phase: Phase) -> str:
    """What the stop line says of a stop at once in `phase`."""
    return consequence if isinstance(consequence, str) else consequence.get(phase, NOTHING_CHANGED)


def stopped_codes(consequence: str) -> dict[int, str]:
    """The exit codes run_script gives any script (128 + the signal's number), saying `consequence`."""
    return {128 + signal.SIGINT: f"stopped by Ctrl-C (SIGINT) before its work was done: one line on stderr, no "
                                 f"traceback; {consequence}. A signal once its work is done (while it prints, say) "
                                 f"leaves its exit code as it was",
            128 + signal.SIGTERM: "stopped by SIGTERM, likewise",
            OUTPUT_CLOSED: "the reader of its output went away (a pipe into head, say): nothing more is printed"}


def exit_code_lines(codes: Mapping[int, str]) -> str:
    """A script's exit codes (code -> meaning) as its --help lists them; the README's tables are tested
    against the same mappings."""
    lines = [textwrap.fill(meaning, 100, initial_indent=f"  {code:<5}", subsequent_indent=" " * 7)
             for code, meaning in sorted(codes.items())]
    return "\n".join(["exit codes:", *lines])


class OneLineArgumentParser(argparse.ArgumentParser):
    """An argument error is one line on stderr (not the usage block), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(ExitStatus.SETUP_ERROR, one_line(f"{self.prog}: error: {message} (see {self.prog} --help)") + "\n")


def named_path(what: str) -> Callable[[str], Path]:
    """An argparse type: a path naming `what`; an empty one is refused, since Path("") names the current
    folder (logs written there, a folder read as a file), and so is one of spaces only (a typing slip)."""
    def parse(text: str) -> Path:
        if not text.strip():
            raise argparse.ArgumentTypeError(f"the name is empty{' (only spaces)' if text else ''}; give the name "
                                             f"of {what}")
        return Path(text)
    return parse


def bounded_int(minimum: int = INT64_MIN, maximum: int = INT64_MAX) -> Callable[[str], int]:
    """An argparse type: an integer within [minimum, maximum] (by default what MongoDB's Int64 holds)."""
    kind = "a positive integer" if minimum == 1 else "an integer"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            if minimum != 1:
                raise  # argparse says: invalid int value: 'abc'
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text[:40]!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {kind} of at least {minimum}, got {value}"
                                             if minimum != 1 else f"expected {kind}, got {value}")
        if value > maximum:
            raise argparse.ArgumentTypeError(f"expected {kind} of at most {maximum}, got {text[:40]}")
        return value
    parse.__name__ = "int"
    return parse


def run_script(main: Callable[[], int], name: str, consequence: Consequence = NOTHING_CHANGED) -> NoReturn:
    """sys.exit(main()), where a signal that stops the script prints one line and exits 128 + its number.

    SIGINT and SIGTERM are recorded for the whole script, and acted on as utils/shutdown.py says for
    each phase. A stop before the script's work is committed unwinds it as a crash does: an
    embedded database is not saved, a task in hand on a server is recovered by a later run (see
    docs/design.md, "Crash recovery"); the line says `consequence` (of the phase the signal came in; nothing
    was changed for a StoppedBeforeWork). Once main returned, its exit code
    stands: a first signal while its output is flushed lets the flush finish, a second one ends it
    with one line, and the exit code is still main's. When `main` is the program's own (`python
    SCRIPT`), the process ends with run_script: once the exit code is decided, SIGINT and SIGTERM
    are ignored while Python shuts down, so that no signal changes it; called from other code (a
    test), run_script gives the previous handlers back.
    """
    the_program = getattr(main, "__module__", None) == "__main__"
    with recording_signals(keep_installed=the_program) as signals:
        code = _exit_code(main, name, consequence, signals)
        signals.enter(Phase.EXITING)
    if the_program:
        # Python's shutdown puts back the default action of a signal it handles (a SIGTERM would kill
        # the process), not of one it ignores.
        for number in STOP_SIGNALS:
            signal.signal(number, signal.SIG_IGN)
    sys.exit(code)


def _exit_code(main: Callable[[], int], name: str, consequence: Consequence, signals: SignalRecord) -> int:
    try:
        code = main()
        signals.commit(code)
        signals.check()  # a second signal came by then: what is left to print is given up
        sys.stdout.flush()
    except KeyboardInterrupt:  # raised by code itself: the handler records SIGINT, it never raises this
        return _stopped(name, signal.SIGINT, consequence_of(consequence, signals.phase))
    except StoppedBeforeWork as interruption:
        return _stopped(name, interruption.signal_number, NOTHING_CHANGED)
    except Interrupted as interruption:
        if signals.exit_code is None:
            return _stopped(name, interruption.signal_number, consequence_of(consequence, signals.phase))
        return stopped_after_work(name, interruption.signal_number, signals.exit_code)
    except BrokenPipeError:
        # The reader of stdout went away (`... | head`): nothing left to tell it. Python would
        # print a traceback when it flushes stdout at exit.
        _stdout_to_devnull()
        return OUTPUT_CLOSED
    return code


def print_whole(text: str) -> None:
    """`text` on stdout, to its last byte or a BrokenPipeError (run_script: exit 141). Python's own write of a
    large text into a pipe whose reader leaves midway ends with the part written and no error (the write is
    cut short by the SIGPIPE it ignores), so a script would end 0 with its output cut; each byte is written
    here, by os.write until done. batch_monitor.py's outputs, which grow with the history, go through it;
    main.py's one record is printed as usual. A stdout that is no file (a test's capture) is written as it is."""
    try:
        descriptor = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        sys.stdout.write(text)
        return
    sys.stdout.flush()
    data = memoryview(text.encode(sys.stdout.encoding or "utf-8", errors="replace"))
    while data:
        data = data[os.write(descriptor, data):]


def _stdout_to_devnull() -> None:
    """What Python still holds for stdout goes to /dev/null when it flushes it at exit: never to a reader that
    went away, nor to one that stopped reading (a write that would block). Nothing to do when stdout is not a
    file (a test's capture)."""
    try:
        descriptor = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return
    os.dup2(os.open(os.devnull, os.O_WRONLY), descriptor)


def _stopped(name: str, signal_number: int, consequence: str) -> int:
    print(one_line(f"{name}: stopped by {signal.Signals(signal_number).name}; {consequence}"), file=sys.stderr)
    return 128 + signal_number


def stopped_after_work(name: str, signal_number: int, exit_code: int, work: str = "its work was done",
                       unfinished: str = "what it had still to print") -> int:
    """The line of a script a second signal stopped after `work`: its exit code was decided then, and stands.
    What it had still to print is given up (a write blocked on a full pipe is what the signal was for)."""
    _stdout_to_devnull()
    print(one_line(f"{name}: stopped by {signal.Signals(signal_number).name} after {work}; exit code {exit_code}, "
                   f"as decided then; {unfinished} may be missing"), file=sys.stderr)
    return exit_code
