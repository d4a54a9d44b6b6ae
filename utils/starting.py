"""A script's first lines: until run_script records signals (utils/cli.py), its modules are still loading, and
Python would answer a Ctrl-C there with a traceback and a SIGTERM with nothing at all. Each script installs
this before its other imports, when it runs as the program: either signal then ends it with one line."""

import os
import signal
from types import FrameType


def stop_quietly_while_starting(name: str) -> None:
    """Until run_script installs its own handlers: SIGINT or SIGTERM prints one line and ends the process with
    128 + the signal's number. Nothing was changed yet: the script has not even read its configuration."""
    def stopped(number: int, _frame: FrameType | None) -> None:
        os.write(2, f"{name}: stopped by {signal.Signals(number).name} while starting; nothing was changed\n".encode())
        os._exit(128 + number)
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, stopped)
