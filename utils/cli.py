"""What the three scripts share on the command line: one-line argument errors, bounded integer
options, and Ctrl-C / SIGTERM ending a script with one line instead of a traceback."""

import argparse
import enum
import os
import signal
import sys
import textwrap
from collections.abc import Callable, Mapping
from typing import NoReturn

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class ExitStatus(enum.IntEnum):
    """The exit codes of main.py, database_update.py and batch_monitor.py."""
    OK = 0
    TASK_ERROR = 1  # main.py: a task ended in error (--dry-run: would be refused)
    REFUSED = 1  # database_update.py: no confirmation to delete
    SETUP_ERROR = 2  # a configuration, connection, database or command-line error
    # batch_monitor.py check: the monitoring-plugin convention
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


OUTPUT_CLOSED = 128 + signal.SIGPIPE


def stopped_codes(consequence: str) -> dict[int, str]:
    """The exit codes run_script gives any script (128 + the signal's number), saying `consequence`."""
    return {128 + signal.SIGINT: f"stopped by Ctrl-C (SIGINT): one line on stderr, no traceback; {consequence}",
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
        self.exit(ExitStatus.SETUP_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


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


class Interrupted(BaseException):
    """SIGTERM arrived: unwinds like Ctrl-C's KeyboardInterrupt, so nothing half done is saved."""

    def __init__(self, signal_number: int):
        super().__init__(signal_number)
        self.signal_number = signal_number


def _raise_interrupted(signal_number: int, _frame: object) -> NoReturn:
    raise Interrupted(signal_number)


def run_script(main: Callable[[], int], name: str, consequence: str = "nothing was changed") -> NoReturn:
    """sys.exit(main()), where Ctrl-C and SIGTERM print one line and exit 128 + the signal's number.

    The exception unwinds the script as a crash does: an embedded database is not saved, a
    task in hand on a server is recovered by a later run (see README, "Crash recovery").
    """
    signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        code = main()
        sys.stdout.flush()
    except KeyboardInterrupt:
        code = _stopped(name, signal.SIGINT, consequence)
    except Interrupted as interruption:
        code = _stopped(name, interruption.signal_number, consequence)
    except BrokenPipeError:
        # The reader of stdout went away (`... | head`): nothing left to tell it. Python would
        # print a traceback when it flushes stdout at exit, so stdout goes to /dev/null first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = OUTPUT_CLOSED
    sys.exit(code)


def _stopped(name: str, signal_number: int, consequence: str) -> int:
    print(f"{name}: stopped by {signal.Signals(signal_number).name}; {consequence}", file=sys.stderr)
    return 128 + signal_number
