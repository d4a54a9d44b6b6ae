"""What the three scripts share on the command line: one-line argument errors, bounded integer
options, and Ctrl-C / SIGTERM ending a script with one line instead of a traceback."""

import argparse
import os
import signal
import sys

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class OneLineArgumentParser(argparse.ArgumentParser):
    """An argument error is one line on stderr (not the usage block), exit code `usage_exit_code` (2)."""

    usage_exit_code = 2

    def error(self, message):
        self.exit(self.usage_exit_code, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def bounded_int(minimum=INT64_MIN, maximum=INT64_MAX):
    """An argparse type: an integer within [minimum, maximum] (by default what MongoDB's Int64 holds)."""
    kind = "a positive integer" if minimum == 1 else "an integer"

    def parse(text):
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

    def __init__(self, signal_number):
        super().__init__(signal_number)
        self.signal_number = signal_number


def _raise_interrupted(signal_number, _frame):
    raise Interrupted(signal_number)


def run_script(main, name, consequence="nothing was changed"):
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
        code = 128 + signal.SIGPIPE
    sys.exit(code)


def _stopped(name, signal_number, consequence):
    print(f"{name}: stopped by {signal.Signals(signal_number).name}; {consequence}", file=sys.stderr)
    return 128 + signal_number
