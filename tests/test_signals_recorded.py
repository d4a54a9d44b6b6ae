"""A signal handler only records; the main flow acts on the record at its check points and logs there
(issue 15, items 8 and 9). A signal that lands in a __del__, a finally or a library's `except
BaseException` still stops the run; a signal during a log write loses no line."""

import io
import logging
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager

import filelock
import pytest

import task_processor
from embedded import data_file
from tests.support import After
from utils.cli import Interrupted, run_script
from utils.shutdown import Phase, SignalRecord, StopRequest, recording_signals

RECEIVED = "SIGTERM received: the task in hand is finished, no new task is claimed, then the run ends"


def embedded(tmp_path, script):
    env = {"DRS_MONGO_URI": f"embedded://{tmp_path / 'db.bson'}"}
    assert script("database_update.py", env=env).returncode == 0
    return env


def logs(tmp_path):
    return "--log-dir", str(tmp_path / "logs")


class SignalsWhenDeleted:
    """Sends `signal_number` to this process from its __del__, where Python ignores any exception (it only
    reports it), as tqdm's __del__ did at the end of a load."""

    def __init__(self, signal_number):
        self.signal_number = signal_number

    def __del__(self):
        os.kill(os.getpid(), self.signal_number)


def send_swallowed(signal_number):
    """Sends `signal_number` where a careless library would swallow whatever it raises."""
    try:
        os.kill(os.getpid(), signal_number)
    except BaseException:  # noqa: BLE001 - the library this stands for swallows everything
        pass


@pytest.fixture
def unraisable(monkeypatch):
    """What Python reports as "Exception ignored" (in a __del__, say) during the test."""
    reported = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)
    return reported


# --- item 8: a stop request is recorded, not raised through arbitrary code -------------------

@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_a_destructor_swallows_at_the_end_of_loading_still_stops_the_run(tmp_path, script, monkeypatch,
                                                                                 unraisable, signal_number):
    env = embedded(tmp_path, script)
    before = (tmp_path / "db.bson").read_bytes()
    counter = data_file.progress_counter

    @contextmanager
    def loading_counter(description, *args, **kwargs):
        with counter(description, *args, **kwargs) as bar:
            yield bar
        if description.startswith("loading"):
            SignalsWhenDeleted(signal_number)  # deleted at once: its __del__ runs here
    monkeypatch.setattr(data_file, "progress_counter", loading_counter)
    with pytest.raises(Interrupted) as stopped:  # run_script turns it into one line and 128 + the signal
        script("main.py", *logs(tmp_path), env=env)
    assert stopped.value.signal_number == signal_number
    assert (tmp_path / "db.bson").read_bytes() == before
    assert unraisable == []  # the handler raised nothing inside the __del__


def test_a_signal_a_library_swallows_while_loading_still_stops_the_run(tmp_path, script, monkeypatch):
    env = embedded(tmp_path, script)
    before = (tmp_path / "db.bson").read_bytes()
    store_documents = data_file.store_documents

    def storing(collection, documents, *loaded_from):
        send_swallowed(signal.SIGTERM)
        return store_documents(collection, documents, *loaded_from)
    monkeypatch.setattr(data_file, "store_documents", storing)
    with pytest.raises(Interrupted):
        script("main.py", *logs(tmp_path), env=env)
    assert (tmp_path / "db.bson").read_bytes() == before


def test_a_second_signal_a_library_swallows_during_a_task_still_stops_the_run_at_once(tmp_path, script,
                                                                                     monkeypatch):
    env = embedded(tmp_path, script)
    before = (tmp_path / "db.bson").read_bytes()
    process = task_processor.process_single_batch

    def processing(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        send_swallowed(signal.SIGTERM)
        return process(*args, **kwargs)
    monkeypatch.setattr(task_processor, "process_single_batch", processing)
    with pytest.raises(Interrupted):  # before the task's first database command
        script("main.py", *logs(tmp_path), env=env)
    assert (tmp_path / "db.bson").read_bytes() == before


def test_a_signal_while_the_run_waits_for_the_lock_stops_it_at_the_next_poll(tmp_path, script, monkeypatch):
    env = embedded(tmp_path, script)  # the shipped configuration waits up to 300 s for the lock
    before = (tmp_path / "db.bson").read_bytes()
    holder = filelock.FileLock(f"{tmp_path / 'db.bson'}.lock")

    class SignalledWhileWaiting(filelock.FileLock):
        def acquire(self, *args, **kwargs):
            os.kill(os.getpid(), signal.SIGTERM)
            return super().acquire(*args, **kwargs)
    monkeypatch.setattr(filelock, "FileLock", SignalledWhileWaiting)
    started = time.monotonic()
    with holder, pytest.raises(Interrupted):
        script("main.py", *logs(tmp_path), env=env)
    assert time.monotonic() - started < 5
    assert (tmp_path / "db.bson").read_bytes() == before


def test_ctrl_c_ends_a_script_blocked_before_it_holds_anything(capsys, monkeypatch):
    """A blocking call with no check point (database_update.py's confirmation prompt) ends at once."""
    read_end, write_end = os.pipe()
    stdin = os.fdopen(read_end)
    monkeypatch.setattr(sys, "stdin", stdin)
    # Ctrl-C goes to the main thread, blocked in its read; should nothing end the read, the answer
    # comes after 10 s and the test fails instead of hanging.
    ctrl_c = After(0.05, signal.pthread_kill, threading.main_thread().ident, signal.SIGINT)
    answer = After(10, os.write, write_end, b"yes\n")

    def prompt():
        ctrl_c.start()
        answer.start()
        return 0 if input("Type yes: ") == "yes" else 1
    try:
        with pytest.raises(SystemExit) as exit_:
            run_script(prompt, "database_update", "nothing was changed")
    finally:
        answer.cancel()
        ctrl_c.join()
        answer.join()
        os.close(write_end)
        stdin.close()
    assert exit_.value.code == 130
    assert capsys.readouterr().err.strip() == "database_update: stopped by SIGINT; nothing was changed"


# --- the handler and the check points ----------------------------------------------------------

@pytest.mark.parametrize("phase, raising", [(Phase.PREPARING, [1, 2, 3]), (Phase.HOLDING, []), (Phase.WORKING, []),
                                             (Phase.COMMITTED, [2, 3]), (Phase.EXITING, [])])
def test_the_handler_raises_only_where_nothing_is_at_stake(phase, raising):
    signals = SignalRecord()
    signals.enter(phase)
    raised = []
    for number in (1, 2, 3):
        try:
            signals.record(signal.SIGTERM, None)
        except Interrupted:
            raised.append(number)
    assert raised == raising
    assert (signals.count, signals.first, signals.last) == (3, signal.SIGTERM, signal.SIGTERM)


def recorded(phase, *signal_numbers):
    """A record in `phase` holding `signal_numbers`, as a handler that never raises records them."""
    signals = SignalRecord()
    signals.enter(Phase.EXITING)
    for number in signal_numbers:
        signals.record(number, None)
    signals.enter(phase)
    return signals


@pytest.mark.parametrize("phase, tolerated", [(Phase.PREPARING, 0), (Phase.HOLDING, 0), (Phase.WORKING, 1),
                                              (Phase.COMMITTED, 1)])
def test_a_check_point_stops_the_script_once_its_phase_tolerates_no_more_signals(phase, tolerated):
    recorded(phase, *[signal.SIGTERM] * tolerated).check()
    with pytest.raises(Interrupted) as stopped:
        recorded(phase, *[signal.SIGTERM] * tolerated, signal.SIGINT).check()
    assert stopped.value.signal_number == signal.SIGINT  # the one that asked for it


def test_a_check_point_stops_again_until_the_flow_has_stopped_for_the_signals_so_far():
    signals = recorded(Phase.COMMITTED, signal.SIGTERM, signal.SIGTERM)
    for _ in range(2):  # a raise can be swallowed: the record keeps asking
        with pytest.raises(Interrupted):
            signals.check()
    signals.stopped()  # main.py said so in its one line: run_script's check point does not say it again
    signals.check()
    with pytest.raises(Interrupted):
        signals.record(signal.SIGTERM, None)  # a new one: the handler raises, where nothing is at stake


class Collected(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_the_handler_logs_nothing_the_run_logs_the_signal_at_its_next_check_point():
    collected = Collected()
    logger = logging.getLogger("drs_amend")
    logger.addHandler(collected)
    try:
        with recording_signals() as signals:
            stop = StopRequest(signals=signals)
            stop.start_working()
            os.kill(os.getpid(), signal.SIGTERM)
            assert (signals.count, collected.messages) == (1, [])
            assert stop.reason() == "stopped by SIGTERM"
            assert stop.reason() == "stopped by SIGTERM"
    finally:
        logger.removeHandler(collected)
    assert [message for message in collected.messages if "received" in message] == [
        RECEIVED + " (send it again to stop at once)"]


def test_a_second_signal_stops_a_retry_pause_within_a_tenth_of_a_second():
    signals, slept = SignalRecord(), []
    stop = StopRequest(signals=signals, sleep=slept.append)
    stop.start_working()
    signals.record(signal.SIGTERM, None)
    stop.pause(0.25)  # a first signal lets the pause, and the task, go on
    assert slept == [0.1, 0.1, pytest.approx(0.05)]
    signals.record(signal.SIGTERM, None)
    with pytest.raises(Interrupted):
        stop.pause(8)
    assert len(slept) == 4


class RaisesWhenDeleted:
    def __init__(self, error):
        self.error = error

    def __del__(self):
        raise self.error


def test_an_interrupted_python_could_not_raise_is_not_reported_and_other_errors_still_are(unraisable):
    with recording_signals():
        RaisesWhenDeleted(Interrupted(signal.SIGTERM))  # the record has it: the next check point acts on it
        RaisesWhenDeleted(ValueError("a bug in a __del__"))
    RaisesWhenDeleted(Interrupted(signal.SIGTERM))  # outside a script's recording, reported as Python does
    assert [type(details.exc_value) for details in unraisable] == [ValueError, Interrupted]


def test_signals_are_recorded_only_where_python_can_set_handlers():
    recorded = []

    def in_a_thread():
        with recording_signals() as signals:
            recorded.append(signals)
    thread = threading.Thread(target=in_a_thread)
    thread.start()
    thread.join()
    assert signal.getsignal(signal.SIGTERM) is not recorded[0].record
    with recording_signals() as outer, recording_signals() as inner:  # a script's main inside run_script
        assert inner is outer
        assert signal.getsignal(signal.SIGTERM) == outer.record
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# --- item 9: the handler writes nothing; a signal during a log write loses no line ------------

class SignallingStderr(io.RawIOBase):
    """The bytes under sys.stderr; sends SIGTERM while the first line holding `text` is being written, as a
    signal landing in the middle of a log write does."""

    def __init__(self, text):
        self.text = text.encode()
        self.written = bytearray()
        self.sent = False

    def writable(self):
        return True

    def write(self, data):
        if not self.sent and self.text in bytes(data):
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)
        self.written += data
        return len(data)


def test_a_signal_during_a_log_write_loses_no_line_and_prints_no_logging_error(tmp_path, script, monkeypatch):
    env = embedded(tmp_path, script)
    raw = SignallingStderr("open amend task(s)")
    # What sys.stderr is in a process: line-buffered text over a BufferedWriter, which refuses a reentrant call.
    monkeypatch.setattr(sys, "stderr", io.TextIOWrapper(io.BufferedWriter(raw), encoding="utf-8",
                                                        line_buffering=True))
    result = script("main.py", *logs(tmp_path), env=env)
    sys.stderr.flush()
    stderr = raw.written.decode()
    assert raw.sent
    assert result.returncode == 143, stderr
    assert "Logging error" not in stderr and "reentrant" not in stderr
    assert RECEIVED in stderr
    assert "2 open amend task(s)" in stderr  # the line being written when the signal came
    assert RECEIVED in (tmp_path / "logs" / "drs_amend.log").read_text()
