"""Stopping a run between two tasks: SIGTERM or Ctrl-C, and the time limit (--max-minutes, [RUN] MAX_MINUTES)."""

import os
import shutil
import signal
from datetime import datetime

import pytest

import task_processor
from amend_store import RUN_HISTORY_COLLECTION, TASKS_COLLECTION, TaskStatus
from tests.support import (
    PROJECT_ROOT,
    SETTINGS,
    TASK_005,
    TASK_006,
    fixed_clock,
    fresh_db,
    load,
    one_line,
    store_of,
)
from utils.cli import Interrupted
from utils.shutdown import StopRequest


def statuses(db):
    return {task["_id"]: task["task_status"] for task in db[TASKS_COLLECTION].find({"_id": {"$in": [TASK_005,
                                                                                                    TASK_006]}})}


class MinuteClock:
    """A monotonic clock a test moves, in seconds."""

    def __init__(self):
        self.seconds = 0.0

    def __call__(self):
        return self.seconds


def after_each_task(monkeypatch, action):
    """Call `action()` while each task is processed, then process it."""
    process = task_processor.process_single_batch

    def processing(*args, **kwargs):
        action()
        return process(*args, **kwargs)
    monkeypatch.setattr(task_processor, "process_single_batch", processing)


def test_no_task_is_claimed_once_the_time_limit_is_reached(monkeypatch):
    db, clock = fresh_db(), MinuteClock()
    stop = StopRequest(max_minutes=2, clock=clock)

    def a_long_task():
        clock.seconds += 121
    after_each_task(monkeypatch, a_long_task)
    report = task_processor.amend_task_processing(store_of(db), SETTINGS, clock=fixed_clock, stop=stop)
    assert [outcome.status for outcome in report.outcomes] == ["completed"]  # the task in hand is finished
    assert statuses(db) == {TASK_005: TaskStatus.COMPLETED, TASK_006: TaskStatus.OPEN}
    assert db[TASKS_COLLECTION].find_one({"_id": TASK_006}).get("claimed_by") is None
    assert (report.stop_reason, report.not_started, report.exit_code) == (
        "time limit of 2 minute(s) reached", 1, 0)
    assert report.summary_line().endswith("; time limit of 2 minute(s) reached: 1 open task(s) left for the next run")
    assert report.document()["stop_reason"] == "time limit of 2 minute(s) reached"

    later = task_processor.amend_task_processing(store_of(db), SETTINGS, clock=fixed_clock,
                                                 stop=StopRequest(max_minutes=2, clock=MinuteClock()))
    assert statuses(db) == {TASK_005: TaskStatus.COMPLETED, TASK_006: TaskStatus.COMPLETED}
    assert later.stop_reason is None and later.not_started == 0


def test_before_its_time_limit_a_run_processes_every_task():
    db = fresh_db()
    report = task_processor.amend_task_processing(store_of(db), SETTINGS, clock=fixed_clock,
                                                  stop=StopRequest(max_minutes=1, clock=MinuteClock()))
    assert [outcome.status for outcome in report.outcomes] == ["completed", "completed"]
    assert report.stop_reason is None


def embedded(tmp_path, script):
    env = {"DRS_MONGO_URI": f"embedded://{tmp_path / 'db.bson'}"}
    assert script("database_update.py", env=env).returncode == 0
    return env


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_a_task_finishes_it_claims_no_other_and_records_the_run(tmp_path, script, monkeypatch,
                                                                               signal_number):
    env = embedded(tmp_path, script)
    sent = []

    def signal_once():
        if not sent:
            sent.append(signal_number)
            os.kill(os.getpid(), signal_number)
    after_each_task(monkeypatch, signal_once)
    result = script("main.py", "--log-dir", str(tmp_path / "logs"), env=env)
    name = signal.Signals(signal_number).name
    assert result.returncode == 128 + signal_number, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{name} received: the task in hand is finished, no new task is claimed" in result.stderr
    assert "1 task(s) completed, 0 errored" in result.stderr
    assert f"stopped by {name}: 1 open task(s) left for the next run" in result.stderr
    db = load(tmp_path / "db.bson")  # the run's work was saved
    assert statuses(db) == {TASK_005: TaskStatus.COMPLETED, TASK_006: TaskStatus.OPEN}
    (run,) = db[RUN_HISTORY_COLLECTION].find()
    assert (run["stop_reason"], run["not_started"], run["exit_code"], run["completed"]) == (
        f"stopped by {name}", 1, 128 + signal_number, 1)

    again = script("main.py", "--log-dir", str(tmp_path / "logs"), env=env)
    assert again.returncode == 0
    assert statuses(load(tmp_path / "db.bson")) == {TASK_005: TaskStatus.COMPLETED, TASK_006: TaskStatus.COMPLETED}


def test_a_second_signal_stops_the_run_at_once_and_saves_nothing(tmp_path, script, monkeypatch):
    env = embedded(tmp_path, script)
    before = (tmp_path / "db.bson").read_bytes()

    def signal_twice():
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
    after_each_task(monkeypatch, signal_twice)
    with pytest.raises(Interrupted):  # run_script turns it into one line and exit code 143
        script("main.py", "--log-dir", str(tmp_path / "logs"), env=env)
    assert (tmp_path / "db.bson").read_bytes() == before
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers are given back


def test_max_minutes_on_the_command_line_overrides_the_setting(tmp_path, script, monkeypatch):
    env = embedded(tmp_path, script)
    config = tmp_path / "config"
    shutil.copytree(PROJECT_ROOT / "config", config)
    logs = ("--config-dir", str(config), "--log-dir", str(tmp_path / "logs"))
    (config / "Job_Settings.ini").write_text("[RUN]\nMAX_MINUTES = 0\n")
    refused = script("main.py", *logs, env=env)
    assert refused.returncode == 2 and "[RUN] MAX_MINUTES" in one_line(refused.stderr)
    refused = script("main.py", *logs, "--max-minutes", "10081", env=env)
    assert refused.returncode == 2 and "argument --max-minutes" in one_line(refused.stderr)

    (config / "Job_Settings.ini").write_text("[RUN]\nMAX_MINUTES = 10080\n")
    monkeypatch.setattr("utils.shutdown.MINUTE", 0)  # every limit is reached at once: no task is claimed
    from_setting = script("main.py", *logs, env=env)
    assert "time limit of 10080 minute(s) reached: 2 open task(s) left for the next run" in from_setting.stderr
    from_option = script("main.py", *logs, "--max-minutes", "1", env=env)
    assert "time limit of 1 minute(s) reached: 2 open task(s) left for the next run" in from_option.stderr
    assert from_setting.returncode == from_option.returncode == 0
    assert statuses(load(tmp_path / "db.bson")) == {TASK_005: TaskStatus.OPEN, TASK_006: TaskStatus.OPEN}


def test_a_run_told_to_stop_takes_over_no_stale_task_either():
    db = fresh_db()
    stale = {"task_status": "processing", "claim_expires_dtm": datetime(2020, 1, 1),
             "claimed_by": {"run_id": "gone", "host": "h", "pid": 1}}
    db[TASKS_COLLECTION].update_one({"_id": TASK_005}, {"$set": stale})
    stop = StopRequest()
    stop.signal_number = signal.SIGTERM
    report = task_processor.amend_task_processing(store_of(db), SETTINGS, clock=fixed_clock, stop=stop)
    assert report.outcomes == [] and (report.stop_reason, report.not_started) == ("stopped by SIGTERM", 1)
    assert db[TASKS_COLLECTION].find_one({"_id": TASK_005})["claimed_by"]["run_id"] == "gone"  # left for later
    later = task_processor.amend_task_processing(store_of(db), SETTINGS, clock=fixed_clock)
    assert [outcome.status for outcome in later.outcomes] == ["error", "completed"]  # recovered, then 006
