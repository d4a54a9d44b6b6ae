"""The lock wait visible (issue 17): who holds the embedded data file's lock is written beside it
(`PATH.lock.holder`), a waiting run names the holder and logs its progress, the timeout names the holder, the
wait is recorded apart from the run's duration; a file of the job another account left behind is named with
its owner; a dry run creates no log folder.

The holder is a second process (a subprocess); every wait is a time.sleep loop or filelock's own polling, so
that the tests pass under libfaketime too (see tests/support.After)."""

import errno
import json
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import filelock
import pytest

from amend_store import RUN_HISTORY_COLLECTION
from embedded import data_file
from embedded.data_file import EmbeddedDatabaseFile, program_name
from history.records import MalformedRecord, parse_run
from tests.support import PROJECT_ROOT, load, one_line
from utils.Custom_Exceptions import ConfigurationError, DatabaseConnectionError
from utils.loggers import setup_logging

DB_NAME = "drs_case_distribution_db"
SINCE = r"since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00"
HOLDER_SCRIPT = f"""\
import sys, time
from pathlib import Path
sys.path.insert(0, {str(PROJECT_ROOT)!r})
from embedded.data_file import EmbeddedDatabaseFile
session = EmbeddedDatabaseFile(Path(sys.argv[1]), {DB_NAME!r}, lock_timeout_seconds=30)
session.__enter__()
print("held", flush=True)
time.sleep(float(sys.argv[2]))
session.__exit__(RuntimeError, RuntimeError("released unsaved"), None)
"""


def unknown_uid():
    """A uid no account has: the owner a test gives a file "another account" left behind."""
    uid = 54321
    while True:
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
        uid += 1


ME = pwd.getpwuid(os.geteuid()).pw_name


@pytest.fixture
def path(tmp_path, saved_fixtures):
    shutil.copy(saved_fixtures, tmp_path / "db.bson")
    return Path(os.path.realpath(tmp_path / "db.bson"))


@pytest.fixture
def quick_slices(monkeypatch):
    """The wait reported in slices of 0.2 s and every 0.5 s, instead of 1 s and 10 s."""
    monkeypatch.setattr(data_file, "LOCK_SLICE_SECONDS", 0.2)
    monkeypatch.setattr(data_file, "LOCK_PROGRESS_SECONDS", 0.5)


class Holder:
    """A second process, holder.py, holding the lock of `path` for `seconds` (then releasing it unsaved)."""

    def __init__(self, tmp_path, path, seconds):
        script = tmp_path / "holder.py"
        script.write_text(HOLDER_SCRIPT)
        self.process = subprocess.Popen([sys.executable, str(script), str(path), str(seconds)],
                                        stdout=subprocess.PIPE, text=True)
        assert self.process.stdout.readline().strip() == "held"
        self.pid = self.process.pid

    def described(self):
        return f"held by holder.py pid {self.pid} on host {socket.gethostname()} since "

    def end(self, kill=False):
        if kill:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=60)
        self.process.stdout.close()


def assert_the_wait_is_reported(stderr, path, holder):
    """The holder named once, then the time waited (at least twice), then the lock taken."""
    waiting = [line for line in stderr.splitlines() if "waiting for the lock" in line]
    assert re.search(f"INFO waiting for the lock of {re.escape(str(path))}, {re.escape(holder.described())}"
                     r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00 \(for up to 300 s, LOCK_TIMEOUT_SECONDS\)$", waiting[0])
    assert sum("INFO waiting for the lock of" in line for line in waiting) == 1
    progress = waiting[1:]
    assert len(progress) >= 2, stderr
    assert all(re.search(r"INFO still waiting for the lock of .*db\.bson: \d+ s of 300 s \(LOCK_TIMEOUT_SECONDS\)$",
                         line) for line in progress), stderr
    assert f"took the lock of {path} after waiting " in stderr


@pytest.mark.slow  # a real wait of seconds for another process
def test_a_waiting_run_names_the_holder_logs_its_progress_and_records_the_wait(path, tmp_path, script, quick_slices):
    holder = Holder(tmp_path, path, 2.5)
    try:
        result = script("main.py", "--log-dir", str(tmp_path / "logs"), env={"DRS_MONGO_URI": f"embedded://{path}"})
    finally:
        holder.end()
    assert result.returncode == 0, result.stderr
    assert_the_wait_is_reported(result.stderr, path, holder)
    assert "waiting for the lock of" in (tmp_path / "logs" / "drs_amend.log").read_text()
    (document,) = load(path)[RUN_HISTORY_COLLECTION].find()
    run = parse_run(document)
    assert 1.0 < run.lock_wait_seconds < run.duration_seconds
    assert not data_file.holder_file(f"{path}.lock").exists()


def test_a_run_that_takes_the_lock_at_once_records_no_wait_and_logs_none(path, tmp_path, script):
    result = script("main.py", "--log-dir", str(tmp_path / "logs"), env={"DRS_MONGO_URI": f"embedded://{path}"})
    assert result.returncode == 0 and "waiting" not in result.stderr
    (document,) = load(path)[RUN_HISTORY_COLLECTION].find()
    assert document["lock_wait_seconds"] == 0


def test_the_timeout_names_the_holder_in_one_line_and_exits_2(path, tmp_path, script, quick_slices):
    config = tmp_path / "config"
    shutil.copytree(PROJECT_ROOT / "config", config)
    ini = config / "DB_Config.ini"
    ini.write_text(ini.read_text().replace("LOCK_TIMEOUT_SECONDS = 300", "LOCK_TIMEOUT_SECONDS = 1"))
    before = path.read_bytes()
    holder = Holder(tmp_path, path, 60)
    try:
        result = script("main.py", "--config-dir", str(config), "--log-dir", str(tmp_path / "logs"),
                        env={"DRS_MONGO_URI": f"embedded://{path}"})
        with pytest.raises(DatabaseConnectionError) as error:
            EmbeddedDatabaseFile(path, DB_NAME, lock_timeout_seconds=0).__enter__()
    finally:
        holder.end(kill=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert re.search(f"embedded database file {re.escape(str(path))} stayed locked by another process for 1 s "
                     f"\\(LOCK_TIMEOUT_SECONDS\\), {re.escape(holder.described())}"
                     r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00: let it finish, or stop it if it hangs$", line)
    assert str(error.value).startswith(f"embedded database file {path} stayed locked by another process for 0 s "
                                       f"(LOCK_TIMEOUT_SECONDS), {holder.described()}")
    assert path.read_bytes() == before


def test_the_holder_file_names_the_holder_while_it_holds_and_is_removed_at_release(path, monkeypatch):
    monkeypatch.setattr(data_file, "_wall_clock", lambda: datetime(2026, 11, 25, 10, 30, tzinfo=UTC))
    holder_path = path.parent / "db.bson.lock.holder"
    for failed in (False, True):
        session = EmbeddedDatabaseFile(path, DB_NAME, lock_timeout_seconds=5)
        session.__enter__()
        assert json.loads(holder_path.read_text()) == {
            "program": program_name(), "pid": os.getpid(), "host": socket.gethostname(),
            "since": "2026-11-25T10:30:00+00:00"}
        assert data_file.lock_holder(f"{path}.lock") == (
            f"held by {program_name()} pid {os.getpid()} on host {socket.gethostname()} "
            f"since 2026-11-25T10:30:00+00:00")
        assert session.lock_wait_seconds == 0 and data_file.held_lock_wait(path) == 0
        session.__exit__(*((RuntimeError, RuntimeError("failed"), None) if failed else (None, None, None)))
        assert sorted(entry.name for entry in path.parent.iterdir()) == ["db.bson", "db.bson.lock"]


def test_the_program_is_the_script_and_its_subcommand_never_an_option_or_a_value():
    assert program_name(["/srv/drs/main.py", "--task-id", "5"]) == "main.py"
    assert program_name(["batch_monitor.py", "task", "requeue", "102"]) == "batch_monitor.py task requeue"
    assert program_name(["database_update.py", "--restore", "backup.bson"]) == "database_update.py"
    assert program_name(["x.py", "secret=abc"]) == "x.py"


def test_a_holder_file_left_by_a_killed_holder_is_overwritten_and_removed(path, tmp_path, script):
    holder = Holder(tmp_path, path, 60)
    holder.end(kill=True)  # kill -9: its holder file stays, the kernel releases its lock
    holder_path = path.parent / "db.bson.lock.holder"
    assert json.loads(holder_path.read_text())["pid"] == holder.pid
    assert "runs no more (a stale file" in data_file.lock_holder(f"{path}.lock")
    session = EmbeddedDatabaseFile(path, DB_NAME, lock_timeout_seconds=5)
    session.__enter__()
    assert json.loads(holder_path.read_text())["pid"] == os.getpid() and session.lock_wait_seconds == 0
    session.__exit__(None, None, None)
    assert not holder_path.exists()


def dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait(timeout=60)
    return process.pid


@pytest.mark.parametrize("content, says", [
    (None, r"held by an unknown process: .*db\.bson\.lock\.holder is missing \(a process of an earlier release"),
    (b"{not json", r"held by an unknown process: .*db\.bson\.lock\.holder is unreadable \("),
    (b'{"pid": 0, "host": "h", "program": "main.py", "since": "2026-01-01T00:00:00"}',
     r"is unreadable \(it does not hold a program, a pid, a host and a time\)"),
    (b"x" * 5000, r"is not a holder file \(over 4096 bytes\)"),
    ("stale", r"names main\.py pid \d+ on host .* since 2026-01-01T00:00:00\+00:00, which runs no more \(a stale file"),
], ids=["missing", "not-json", "no-holder", "too-large", "stale"])
def test_a_holder_that_cannot_be_told_is_said_so_when_the_wait_times_out(path, content, says):
    holder_path = path.parent / "db.bson.lock.holder"
    if content == "stale":
        content = json.dumps({"program": "main.py", "pid": dead_pid(), "host": socket.gethostname(),
                              "since": "2026-01-01T00:00:00+00:00"}).encode()
    if content is not None:
        holder_path.write_bytes(content)
    with filelock.FileLock(f"{path}.lock"):  # a holder that writes no holder file (an earlier release)
        with pytest.raises(DatabaseConnectionError, match="stayed locked by another process for 0 s") as error:
            EmbeddedDatabaseFile(path, DB_NAME, lock_timeout_seconds=0).__enter__()
    assert re.search(says, str(error.value)) and "\n" not in str(error.value)
    if content is not None:
        assert holder_path.read_bytes() == content  # not the waiting run's to remove


def test_a_record_waiting_longer_than_it_lasted_is_malformed():
    started = datetime(2026, 11, 25, 10, 30)
    document = {"_id": "r1", "run_id": "r1", "host": "h", "started_dtm": started,
                "ended_dtm": started.replace(second=5), "duration_seconds": 5.0, "exit_code": 0}
    assert parse_run(document | {"lock_wait_seconds": 5.0}).lock_wait_seconds == 5.0
    with pytest.raises(MalformedRecord, match="run record r1: its lock_wait_seconds is 7.5, more than its "
                                              "duration_seconds 5, which main.py never records"):
        parse_run(document | {"lock_wait_seconds": 7.5})


# --- files another account left behind (the tests run as root: the refusal is simulated) -------------------

def refuse(monkeypatch, target, suffix, flags=0):
    """os.open refuses the files whose name ends with `suffix` (opened with any of `flags`, when given), as
    the kernel refuses a file of another account that this one may not write; `target` gets that owner."""
    uid = unknown_uid()
    os.chown(target, uid, uid)
    real_open = os.open

    def refusing(name, open_flags, *args, **kwargs):
        if str(name).endswith(suffix) and (not flags or open_flags & flags):
            raise PermissionError(errno.EACCES, "Permission denied", str(name))
        return real_open(name, open_flags, *args, **kwargs)
    monkeypatch.setattr(os, "open", refusing)
    return f"uid {uid}"


def test_a_lock_file_of_another_account_is_named_with_its_owner(path, tmp_path, script, monkeypatch):
    lock = path.parent / "db.bson.lock"
    lock.touch()
    owner = refuse(monkeypatch, lock, ".lock")
    result = script("main.py", "--log-dir", str(tmp_path / "logs"), env={"DRS_MONGO_URI": f"embedded://{path}"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert line.endswith(f"lock file {lock} belongs to {owner} and cannot be opened by {ME}: chown it, or remove "
                         f"it while no job runs")


def test_a_holder_file_of_another_account_is_named_with_its_owner_and_the_lock_given_back(path, monkeypatch):
    holder_path = path.parent / "db.bson.lock.holder"
    holder_path.write_text("{}")
    owner = refuse(monkeypatch, holder_path, ".lock.holder", os.O_WRONLY)
    with pytest.raises(DatabaseConnectionError) as error:
        EmbeddedDatabaseFile(path, DB_NAME, lock_timeout_seconds=0).__enter__()
    assert str(error.value) == (f"lock holder file {holder_path} belongs to {owner} and cannot be written by {ME}: "
                                f"remove it or chown it")
    with filelock.FileLock(f"{path}.lock").acquire(timeout=0):  # the lock was given back
        pass
    assert holder_path.read_text() == "{}"


def test_a_temporary_file_of_another_account_is_named_with_its_owner(path, monkeypatch, caplog):
    left = path.parent / "db.bson.abc123.tmp"
    left.write_bytes(b"half a save")
    uid = unknown_uid()
    os.chown(left, uid, uid)
    real_unlink = Path.unlink

    def refusing(self, missing_ok=False):
        if self.name.endswith(".tmp"):
            raise PermissionError(errno.EPERM, "Operation not permitted", str(self))
        return real_unlink(self, missing_ok=missing_ok)
    monkeypatch.setattr(Path, "unlink", refusing)
    with caplog.at_level(logging.WARNING, logger="drs_amend.embedded"):
        session = EmbeddedDatabaseFile(path, DB_NAME, lock_timeout_seconds=5)
        session.__enter__()
        session.__exit__(RuntimeError, RuntimeError("unsaved"), None)
    assert f"temporary file {left} belongs to uid {uid} and cannot be removed by {ME}: remove it by hand" \
        in caplog.text


def test_a_save_in_a_folder_of_another_account_names_the_folder_and_its_owner(path, monkeypatch):
    uid = unknown_uid()
    session = EmbeddedDatabaseFile(path, DB_NAME, lock_timeout_seconds=5)
    session.__enter__()
    os.chown(path.parent, uid, uid)

    def refused(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path.parent / "db.bson.xyz.tmp"))
    monkeypatch.setattr(tempfile, "NamedTemporaryFile", refused)
    with pytest.raises(DatabaseConnectionError) as error:
        session.__exit__(None, None, None)
    assert str(error.value) == (
        f"embedded database file {path} cannot be written: temporary file {path.parent / 'db.bson.xyz.tmp'} cannot "
        f"be created: its folder {path.parent} belongs to uid {uid} and cannot be written by {ME}: chown it, or give "
        f"the job another folder")
    assert not (path.parent / "db.bson.lock.holder").exists()


def refuse_to_open(monkeypatch, refused):
    """open() fails with EACCES for the names `refused` picks, as for a file of another account (the tests run
    as root, which may open anything)."""
    real_open = open

    def refusing(name, *args, **kwargs):
        if refused(str(name)):
            raise PermissionError(errno.EACCES, "Permission denied", str(name))
        return real_open(name, *args, **kwargs)
    monkeypatch.setattr("builtins.open", refusing)


def test_a_log_file_of_another_account_is_named_with_its_owner_not_blamed_on_loggers_ini(tmp_path, monkeypatch,
                                                                                        script):
    logs = tmp_path / "logs"
    logs.mkdir()
    log_file = logs / "drs_amend.log"
    log_file.touch()
    uid = unknown_uid()
    os.chown(log_file, uid, uid)
    refuse_to_open(monkeypatch, lambda name: name.endswith("drs_amend.log"))
    expected = f"log file {log_file} belongs to uid {uid} and cannot be written by {ME}: remove it or chown it"
    with pytest.raises(ConfigurationError) as error:
        setup_logging(PROJECT_ROOT / "config", logs)
    assert str(error.value) == expected
    result = script("main.py", "--log-dir", str(logs))
    assert result.returncode == 2 and one_line(result.stderr) == f"drs-amend: {expected}"


def test_a_log_folder_of_another_account_is_named_with_its_owner(tmp_path, monkeypatch, restore_logging):
    logs = tmp_path / "logs"
    logs.mkdir()
    uid = unknown_uid()
    os.chown(logs, uid, uid)
    refuse_to_open(monkeypatch, lambda name: name.startswith(str(logs)))
    with pytest.raises(ConfigurationError, match=f"^log file {re.escape(str(logs))}/drs_amend.*\\.log cannot be "
                                                 f"created: its folder {re.escape(str(logs))} belongs to uid {uid} "
                                                 f"and cannot be written by {ME}: chown it, or give the job another "
                                                 f"folder$"):
        setup_logging(PROJECT_ROOT / "config", logs)


# --- a dry run writes nothing, no log either ------------------------------------------------------------------

def test_a_dry_run_creates_no_log_folder_and_logs_on_stderr(path, tmp_path, script):
    env = {"DRS_MONGO_URI": f"embedded://{path}"}
    result = script("main.py", "--dry-run", "--log-dir", str(tmp_path / "logs"), env=env)
    assert result.returncode == 0 and "would reassign" in result.stdout
    assert not (tmp_path / "logs").exists()
    failed = script("main.py", "--dry-run", "--task-id", "999", "--log-dir", str(tmp_path / "logs"), env=env)
    assert failed.returncode == 2 and re.search(r" ERROR no amend task has Task_Id 999", failed.stderr)
    assert not (tmp_path / "logs").exists()
    assert script("main.py", "--log-dir", str(tmp_path / "logs"), env=env).returncode == 0
    assert (tmp_path / "logs" / "drs_amend.log").exists()  # a run keeps its log files
