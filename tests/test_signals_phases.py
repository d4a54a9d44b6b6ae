"""Whenever a SIGTERM comes, a script's exit code, its last line and what it saved agree (issue 15, item
10). Before main.py's run is recorded, a signal that stops it at once saves nothing and says so; once it
is recorded, the script ends with the exit code it was recorded with and never says that nothing was
saved. The scripts run as `python SCRIPT` runs them, through run_script, in this process."""

import fcntl
import json
import os
import signal
import subprocess
import sys
import time

import filelock
import pytest

import database_update
import main as main_script
import task_processor
from amend_store import RUN_HISTORY_COLLECTION, TASKS_COLLECTION
from embedded import data_file
from tests.support import PROJECT_ROOT, TASK_005, TASK_006, load
from utils import secrets
from utils.cli import run_script

NOT_SAVED = "nothing of this run was saved"


@pytest.fixture
def program(capsys, monkeypatch, restore_logging):
    """Run a script's main through run_script, as `python SCRIPT ARGS` does, in this process: (exit code,
    stdout, stderr). DRS_* environment variables come from `env` only."""
    monkeypatch.setattr(secrets, "_secrets", set())
    handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}

    def run(module, name, *args, env):
        restore_logging.restore()
        for variable in [variable for variable in os.environ if variable.startswith("DRS_")]:
            monkeypatch.delenv(variable)
        for variable, value in env.items():
            monkeypatch.setenv(variable, value)
        capsys.readouterr()
        try:
            with pytest.raises(SystemExit) as exit_:
                run_script(lambda: module.main(list(args)), name, module.STOP_CONSEQUENCE)
        finally:
            for number, handler in handlers.items():  # whatever became of them if the script failed
                signal.signal(number, handler)
        output = capsys.readouterr()
        return exit_.value.code, output.out, output.err
    return run


def embedded(tmp_path, script):
    env = {"DRS_MONGO_URI": f"embedded://{tmp_path / 'db.bson'}"}
    assert script("database_update.py", env=env).returncode == 0
    return env


class SignalsWhenDeleted:
    """Sends SIGTERM `count` times from its __del__, where Python ignores any exception raised."""

    def __init__(self, count):
        self.count = count

    def __del__(self):
        for _ in range(self.count):
            os.kill(os.getpid(), signal.SIGTERM)


def sender(count, inside_a_destructor):
    """A function sending `count` SIGTERMs the first time it is called."""
    sent = []

    def send():
        if sent:
            return
        sent.append(count)
        if inside_a_destructor:
            SignalsWhenDeleted(count)
        else:
            for _ in range(count):
                os.kill(os.getpid(), signal.SIGTERM)
    return send


def at(owner, name, after=False):
    """The point where owner.name is first called: the signals come before it runs (after it returns)."""
    def install(monkeypatch, send):
        real = getattr(owner, name)

        def hooked(*args, **kwargs):
            if not after:
                send()
            result = real(*args, **kwargs)
            if after:
                send()
            return result
        monkeypatch.setattr(owner, name, hooked)
    return install


def taking_the_lock(monkeypatch, send):
    class SignalledLock(filelock.FileLock):
        def acquire(self, *args, **kwargs):
            send()
            return super().acquire(*args, **kwargs)
    monkeypatch.setattr(filelock, "FileLock", SignalledLock)


def flushing_stdout(monkeypatch, send):
    """run_script's flush of stdout once main returned, where a write blocked on a full pipe waits."""
    flush, main = sys.stdout.flush, main_script.main
    returned = []

    def flushing():
        if returned:
            send()
        flush()

    def returning(*args, **kwargs):
        code = main(*args, **kwargs)
        returned.append(code)
        return code
    monkeypatch.setattr(sys.stdout, "flush", flushing)
    monkeypatch.setattr(main_script, "main", returning)


STOPPED = None  # stopped at once: nothing of the run saved
# Each point of a run, in order, with what the file holds after one signal there and after two: STOPPED,
# or the run recorded (exit code, tasks completed, open tasks not started). The fixtures hold 2 open tasks.
POINTS = {
    "reading the configuration": (at(main_script, "load_config"), STOPPED, STOPPED),
    "taking the lock": (taking_the_lock, STOPPED, STOPPED),
    "loading": (at(data_file, "store_documents"), STOPPED, STOPPED),
    "starting the first task": (at(task_processor, "process_single_batch"), (143, 1, 1), STOPPED),
    "planning the first task": (at(task_processor, "read_and_plan"), (143, 1, 1), STOPPED),
    "applying the retention": (at(main_script, "keep_history_bounded"), (143, 2, 0), STOPPED),
    "saving, before the run is recorded": (at(data_file, "stored_documents"), (143, 2, 0), STOPPED),
    "saving, once the run is recorded": (at(main_script, "record_run_quietly", after=True), (0, 2, 0), STOPPED),
    "once the file is saved": (at(data_file, "save_database", after=True), (0, 2, 0), (0, 2, 0)),
    "sending the alert": (at(main_script, "alert_on_errors"), (0, 2, 0), (0, 2, 0)),
    "printing --json": (at(main_script, "to_json"), (0, 2, 0), (0, 2, 0)),
    "flushing stdout": (flushing_stdout, (0, 2, 0), (0, 2, 0)),
}
AFTER_THE_RECORD = ["saving, once the run is recorded", "once the file is saved", "sending the alert",
                    "printing --json"]


def assert_no_noise_and_at_most_one_stop_line(stderr):
    for noise in ("Traceback", "Logging error", "Exception ignored"):
        assert noise not in stderr
    assert len([line for line in stderr.splitlines() if line.startswith("drs-amend: stopped by")]) <= 1, stderr


def assert_stopped_at_once_and_nothing_saved(code, stderr, path, before):
    assert (code, path.read_bytes() == before) == (143, True), stderr
    assert stderr.splitlines()[-1] == f"drs-amend: stopped by SIGTERM; {main_script.STOP_CONSEQUENCE}"


def assert_the_saved_run_agrees(code, stdout, stderr, path, recorded):
    """The run saved as `recorded` (exit code, tasks completed, open tasks not started); the exit code, the
    --json report and a last line saying the script was stopped all give the recorded exit code."""
    (run,) = load(path)[RUN_HISTORY_COLLECTION].find()
    assert (run["exit_code"], run["completed"], run["not_started"]) == recorded
    assert code == run["exit_code"], stderr
    assert NOT_SAVED not in stderr
    if stdout:
        assert json.loads(stdout)["exit_code"] == run["exit_code"]
    last_line = stderr.splitlines()[-1]
    if last_line.startswith("drs-amend: stopped by"):
        assert f"after the run was recorded; exit code {run['exit_code']}, as decided then" in last_line \
            or f"after its work was done; exit code {run['exit_code']}, as decided then" in last_line


def assert_what_a_signal_after_the_record_says(stderr, point, signals, inside_a_destructor):
    """One signal once the run is recorded changes nothing and says so; a second one, sent (not from a __del__)
    once the file is saved, leaves the report unfinished."""
    if signals == 1 and point in AFTER_THE_RECORD:
        assert "SIGTERM received after the run was recorded: it changes nothing" in stderr
    if signals == 2 and not inside_a_destructor and point in [*AFTER_THE_RECORD[1:], "flushing stdout"]:
        last_line = stderr.splitlines()[-1]
        assert last_line.startswith("drs-amend: stopped by SIGTERM after"), stderr  # the report left unfinished


@pytest.mark.parametrize("inside_a_destructor", [False, True], ids=["sent", "sent-from-a-__del__"])
@pytest.mark.parametrize("signals", [1, 2])
@pytest.mark.parametrize("point", POINTS)
def test_the_exit_code_the_last_line_and_the_saved_run_agree_whenever_a_signal_comes(
        tmp_path, script, program, monkeypatch, point, signals, inside_a_destructor):
    env = embedded(tmp_path, script)
    path = tmp_path / "db.bson"
    before = path.read_bytes()
    install, *outcomes = POINTS[point]
    install(monkeypatch, sender(signals, inside_a_destructor))
    code, stdout, stderr = program(main_script, "drs-amend", "--json", "--log-dir", str(tmp_path / "logs"), env=env)
    assert_no_noise_and_at_most_one_stop_line(stderr)
    if outcomes[signals - 1] is STOPPED:
        assert_stopped_at_once_and_nothing_saved(code, stderr, path, before)
        return
    assert_the_saved_run_agrees(code, stdout, stderr, path, outcomes[signals - 1])
    assert_what_a_signal_after_the_record_says(stderr, point, signals, inside_a_destructor)


def amend_task_statuses(path):
    return {task["task_status"] for task in load(path)[TASKS_COLLECTION].find({"_id": {"$in": [TASK_005, TASK_006]}})}


def test_a_signal_after_the_reset_is_saved_does_not_say_nothing_was_changed(tmp_path, script, program, monkeypatch):
    env = embedded(tmp_path, script)
    assert script("main.py", "--log-dir", str(tmp_path / "logs"), env=env).returncode == 0
    assert amend_task_statuses(tmp_path / "db.bson") == {"completed"}
    at(data_file, "save_database", after=True)(monkeypatch, sender(1, False))
    code, stdout, stderr = program(database_update, "database_update", env=env)
    assert code == 0, stderr
    assert "reset; imported" in stdout and "nothing was changed" not in stderr
    assert amend_task_statuses(tmp_path / "db.bson") == {"open"}  # reset again


def test_a_second_signal_after_the_reset_is_saved_stops_its_output_with_exit_code_0(tmp_path, script, program,
                                                                                     monkeypatch):
    env = embedded(tmp_path, script)
    assert script("main.py", "--log-dir", str(tmp_path / "logs"), env=env).returncode == 0
    assert amend_task_statuses(tmp_path / "db.bson") == {"completed"}
    at(data_file, "save_database", after=True)(monkeypatch, sender(2, False))
    code, _, stderr = program(database_update, "database_update", env=env)
    assert code == 0
    assert stderr.splitlines()[-1] == ("database_update: stopped by SIGTERM after its work was done; exit code 0, "
                                       "as decided then; what it had still to print may be missing")
    assert amend_task_statuses(tmp_path / "db.bson") == {"open"}  # reset again


def test_a_signal_while_the_reset_loads_the_file_changes_nothing(tmp_path, script, program, monkeypatch):
    env = embedded(tmp_path, script)
    assert script("main.py", "--log-dir", str(tmp_path / "logs"), env=env).returncode == 0
    before = (tmp_path / "db.bson").read_bytes()
    at(data_file, "store_documents")(monkeypatch, sender(1, True))
    code, _, stderr = program(database_update, "database_update", env=env)
    assert code == 143
    assert stderr.splitlines()[-1] == f"database_update: stopped by SIGTERM; {database_update.STOP_CONSEQUENCE}"
    assert (tmp_path / "db.bson").read_bytes() == before


def test_run_script_gives_the_handlers_back_when_a_test_calls_it():
    handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    hook = sys.unraisablehook
    with pytest.raises(SystemExit):
        run_script(lambda: 0, "drs-amend")
    assert {number: signal.getsignal(number) for number in handlers} == handlers
    assert sys.unraisablehook is hook


def test_a_signal_while_python_shuts_down_changes_no_exit_code():
    """Once run_script has the exit code, the process ends with it: a signal as Python exits is recorded
    (the handlers stay), it neither kills the process nor prints anything."""
    program = ("import atexit, os, signal\n"
               "from utils.cli import run_script\n"
               "atexit.register(os.kill, os.getpid(), signal.SIGTERM)\n"
               "run_script(lambda: 1, 'drs-amend')\n")
    ended = subprocess.run([sys.executable, "-c", program], cwd=PROJECT_ROOT, capture_output=True, text=True,
                           timeout=60)
    assert (ended.returncode, ended.stderr) == (1, "")


def full_pipe():
    """(read end, write end) of a pipe already full: a write to it blocks until someone reads."""
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
    os.set_blocking(write_end, False)
    try:
        while True:
            os.write(write_end, b"x" * 4096)
    except BlockingIOError:
        os.set_blocking(write_end, True)
    return read_end, write_end


def test_main_blocked_on_a_full_pipe_after_the_save_ends_on_a_second_signal_with_the_recorded_exit_code(
        tmp_path, script):
    env = embedded(tmp_path, script)
    environment = {name: value for name, value in os.environ.items() if not name.startswith("DRS_")} | env
    log = tmp_path / "logs" / "drs_amend.log"
    read_end, write_end = full_pipe()
    job = subprocess.Popen([sys.executable, str(PROJECT_ROOT / "main.py"), "--json", "--log-dir", str(log.parent)],
                           env=environment, stdout=write_end, stderr=subprocess.PIPE, text=True)
    os.close(write_end)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "DRS Amend run finished" not in (
                log.read_text() if log.exists() else ""):
            time.sleep(0.05)
        # The run is recorded; its report waits for the pipe. A first signal lets it wait, a second ends it
        # (sent until it ends: two identical signals sent at once may reach a process as one).
        while time.monotonic() < deadline and job.poll() is None:
            job.send_signal(signal.SIGTERM)
            time.sleep(0.2)
        _, stderr = job.communicate(timeout=30)
    finally:
        job.kill()
        os.close(read_end)
    (run,) = load(tmp_path / "db.bson")[RUN_HISTORY_COLLECTION].find()
    assert (job.returncode, run["exit_code"]) == (0, 0), stderr
    assert stderr.splitlines()[-1].startswith("drs-amend: stopped by SIGTERM after "), stderr
    assert NOT_SAVED not in stderr and "Traceback" not in stderr


def test_a_script_stopped_after_its_report_was_printed_into_a_full_pipe_does_not_block_at_exit(tmp_path, script):
    """The report waits in stdout's buffer, the pipe is full: once a second signal stopped the script, what it
    still held for stdout is given up, so that Python's flush at exit does not block for ever."""
    env = embedded(tmp_path, script)
    environment = {name: value for name, value in os.environ.items()
                   if not name.startswith("DRS_") and name != "PYTHONUNBUFFERED"} | env  # stdout buffered, as in cron
    program = ("import builtins, os, signal\n"
               "import main\n"
               "from utils.cli import run_script\n"
               "def printing(*args, **kwargs):\n"
               "    builtins.print(*args, **kwargs)\n"
               "    os.kill(os.getpid(), signal.SIGTERM)\n"
               "    os.kill(os.getpid(), signal.SIGTERM)\n"
               "main.print = printing\n"
               "run_script(main.main, 'drs-amend', main.STOP_CONSEQUENCE)\n")
    read_end, write_end = full_pipe()
    job = subprocess.Popen([sys.executable, "-c", program, "--json", "--log-dir", str(tmp_path / "logs")],
                           cwd=PROJECT_ROOT, env=environment, stdout=write_end, stderr=subprocess.PIPE, text=True)
    os.close(write_end)
    try:
        _, stderr = job.communicate(timeout=30)
    finally:
        job.kill()
        os.close(read_end)
    (run,) = load(tmp_path / "db.bson")[RUN_HISTORY_COLLECTION].find()
    assert (job.returncode, run["exit_code"]) == (0, 0), stderr
    assert stderr.splitlines()[-1] == ("drs-amend: stopped by SIGTERM after the run was recorded; exit code 0, as "
                                       "decided then; what it had still to write (metrics, alert e-mail, report) "
                                       "may be missing")
