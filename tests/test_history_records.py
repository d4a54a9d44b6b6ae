"""The run history is read defensively (issue 15, items 4 and 5): a malformed run record is skipped and
counted, never a KeyError in a monitor nor a crash of the job; a record dated in the future is set apart,
never evidence that the job is healthy."""

import shutil
from datetime import datetime, timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

import main
from amend_store import RUN_HISTORY_COLLECTION, TASKS_COLLECTION, utc_now
from embedded.data_file import save_database
from history.records import MalformedRecord, parse_run, read_history
from tests.support import NO_BACKLOG, TASK_006, load


def record(now, **changes):
    started = now - timedelta(minutes=30)
    document = {"_id": "r", "run_id": "r1", "host": "cron-1", "started_dtm": started,
                "ended_dtm": started + timedelta(seconds=5), "duration_seconds": 5.0, "exit_code": 0,
                "completed": 1, "cases_moved": 2, "batch_cases": 40,
                "tasks": [{"_id": "t", "Task_Id": 101, "batch": "005", "outcome": "completed", "cases_moved": 2,
                           "batch_cases": 40}]}
    for name, value in changes.items():
        if value is ...:
            del document[name]
        else:
            document[name] = value
    return document


NOW = utc_now().replace(microsecond=0)


@pytest.mark.parametrize("changes, why", [
    ({"ended_dtm": ...}, "it has no ended_dtm"),
    ({"ended_dtm": "2026-11-28T10:00:00"}, "its ended_dtm is '2026-11-28T10:00:00', not a date"),
    ({"started_dtm": None}, "its started_dtm is None, not a date"),
    ({"run_id": 7}, "its run_id is 7, not a text"),
    ({"exit_code": "0"}, "its exit_code is '0', not an exit code"),
    ({"exit_code": True}, "its exit_code is True, not an exit code"),
    ({"exit_code": 256}, "its exit_code is 256, not an exit code"),
    ({"completed": -1}, "its completed is -1, not a count"),
    ({"cases_moved": 2.5}, "its cases_moved is 2.5, not a count"),
    ({"duration_seconds": float("inf")}, "its duration_seconds is inf, not a number of seconds"),
    ({"tasks": {"a": 1}}, "its tasks are {'a': 1}, not a list"),
    ({"tasks": ["x"]}, "a task is 'x', not a document"),
    ({"tasks": [{"outcome": "won"}]}, "a task's outcome is 'won'"),
    ({"ended_dtm": NOW - timedelta(hours=1)}, "before it starts"),
    ({"completed": 0, "errored": 5, "tasks": []}, "its errored is 5 while 0 of its tasks say so"),
    ({"cases_moved": 10}, "its cases_moved is 10 while its tasks' sum to 2"),
    ({"exit_code": 1}, "its exit_code is 1 with 0 task(s) in error"),
    ({"exit_code": 143}, "its exit_code is 143 with 0 task(s) in error"),
])
def test_a_record_that_is_no_run_is_refused_saying_why(changes, why):
    with pytest.raises(MalformedRecord, match="^run record r: ") as refused:
        parse_run(record(NOW, **changes))
    assert why in str(refused.value)


def test_a_run_a_signal_stopped_is_recorded_with_its_exit_code():
    assert parse_run(record(NOW, exit_code=143, stop_reason="stopped by SIGTERM")).exit_code == 143


def test_a_success_within_the_allowed_skew_ahead_is_a_success_of_now_and_no_figure_is_infinite():
    from ops.monitoring import evaluate_health
    from utils.config import Thresholds

    ahead = record(NOW, started_dtm=NOW + timedelta(minutes=4), ended_dtm=NOW + timedelta(minutes=4, seconds=50),
                   duration_seconds=1e308, batch_cases=2**63 - 1,
                   tasks=[{"outcome": "completed", "cases_moved": 2, "batch_cases": 2**63 - 1}])
    history = read_history([ahead], NOW, timedelta(minutes=5))
    state, line = evaluate_health(history, history.runs[0], 0, NO_BACKLOG, NOW, Thresholds())
    assert "last successful run 0.0 h ago" in line and "last_success_hours=0.00 " in line
    assert "inf" not in line and "seconds_per_1000_cases=U" in line


def test_reading_the_history_sets_apart_the_malformed_and_the_future_and_counts_them():
    documents = [record(NOW, _id=1, run_id="old", started_dtm=NOW - timedelta(hours=3),
                        ended_dtm=NOW - timedelta(hours=2)),
                 record(NOW, _id=2, ended_dtm=...),
                 record(NOW, _id=3, run_id="ahead", host="fast-clock", started_dtm=NOW + timedelta(hours=23),
                        ended_dtm=NOW + timedelta(days=1)),
                 record(NOW, _id=4, run_id="within-skew", started_dtm=NOW, ended_dtm=NOW + timedelta(seconds=30)),
                 record(NOW, _id=5, run_id="new")]
    history = read_history(documents, NOW, timedelta(seconds=60))
    assert [run.run_id for run in history.runs] == ["within-skew", "new", "old"]  # newest first
    assert [run.run_id for run in history.future] == ["ahead"]
    assert history.malformed == ["run record 2: it has no ended_dtm"]
    assert history.set_apart == 2
    assert history.anomalies() == ("2 run record(s) set apart: 1 malformed (first: run record 2: it has no "
                                   "ended_dtm); 1 dated in the future (host fast-clock: is its clock ahead?)")
    assert read_history(documents[:1], NOW, timedelta(0)).anomalies() == ""


@pytest.fixture
def reset(tmp_path, script):
    """The embedded default as database_update.py resets it (tasks 101 and 102 open), and a function adding a
    document to its run history."""
    env = {"DRS_MONGO_URI": f"embedded://{tmp_path / 'db.bson'}"}
    assert script("database_update.py", env=env).returncode == 0

    def add(document):
        db = load(tmp_path / "db.bson")
        db[RUN_HISTORY_COLLECTION].insert_one(document)
        save_database(db, tmp_path / "db.bson")
    return tmp_path, env, add


@pytest.fixture
def ran_once(reset, script):
    """The embedded default after one run of the job at NOW (tasks 101 and 102 completed)."""
    tmp_path, env, add = reset
    assert script("main.py", "--log-dir", str(tmp_path / "logs"), env=env, clock=lambda: NOW).returncode == 0
    return reset


def completed_tasks(db):
    return db[TASKS_COLLECTION].count_documents({"task_status": "completed"})


@pytest.mark.parametrize("changes", [{"ended_dtm": ...}, {"ended_dtm": "2026-11-28T10:00:00"},
                                     {"tasks": [{"Task_Id": 5}]}, {"started_dtm": "yesterday"}])
def test_every_monitor_command_skips_a_malformed_record_and_says_so(ran_once, script, changes):
    tmp_path, env, add = ran_once
    add(record(NOW, **changes))
    run = {"env": env, "clock": lambda: NOW}
    check = script("batch_monitor.py", "check", **run)
    assert check.returncode == 1 and "Traceback" not in check.stderr  # WARNING, never a crash
    assert check.stdout.startswith("DRS-AMEND WARNING - last successful run 0.0 h ago")
    assert "1 run record(s) set apart: 1 malformed (first: run record r: " in check.stdout
    assert "records_set_apart=1" in check.stdout
    status = script("batch_monitor.py", "status", **run)
    assert status.returncode == 0 and "WARNING: 1 run record(s) set apart" in status.stdout
    assert status.stdout.count("\n20") >= 1  # the well-formed run is listed
    report = script("batch_monitor.py", "report", "--html", str(tmp_path / "page.html"), **run)
    assert report.returncode == 0 and "1 run record(s) set apart" in (tmp_path / "page.html").read_text()
    logs = script("batch_monitor.py", "logs", "--export", "csv", **run)
    assert logs.returncode == 0 and "WARNING: 1 run record(s) set apart" in logs.stderr
    assert logs.stdout.count("completed") == 2  # the two tasks of the well-formed run


def test_the_job_with_a_metrics_file_runs_on_over_a_malformed_record(reset, script):
    tmp_path, env, add = reset
    add(record(NOW, _id="bad", exit_code=0, ended_dtm=...))
    before = completed_tasks(load(tmp_path / "db.bson"))
    config = tmp_path / "config"
    shutil.copytree(main.DEFAULT_CONFIG_DIR, config)
    textfile = tmp_path / "drs_amend.prom"
    (config / "Job_Settings.ini").write_text(f"[METRICS]\nTEXTFILE = {textfile}\n")
    result = script("main.py", "--config-dir", str(config), "--log-dir", str(tmp_path / "logs"), env=env,
                    clock=lambda: NOW)
    assert result.returncode == 0 and "Traceback" not in result.stderr
    db = load(tmp_path / "db.bson")
    assert completed_tasks(db) == before + 2  # tasks 101 and 102
    assert db[RUN_HISTORY_COLLECTION].count_documents({}) == 2
    assert "drs_amend_last_run_exit_code 0.0" in textfile.read_text()


def test_a_failure_of_the_bookkeeping_after_the_tasks_never_discards_their_work(reset, script, monkeypatch):
    tmp_path, env, _ = reset
    before = completed_tasks(load(tmp_path / "db.bson"))

    def unforeseen(*_args, **_kwargs):
        raise KeyError("ended_dtm")
    monkeypatch.setattr(main, "keep_history_within", unforeseen)
    result = script("main.py", "--log-dir", str(tmp_path / "logs"), env=env, clock=lambda: NOW)
    assert result.returncode == 0
    assert "the retention of the run history failed after the tasks were done; their work is kept" in result.stderr
    assert completed_tasks(load(tmp_path / "db.bson")) == before + 2  # tasks 101 and 102


def samples(path):
    return {sample.name: sample.value for family in text_string_to_metric_families(path.read_text())
            for sample in family.samples if not sample.labels}


def test_a_success_dated_in_the_future_is_never_evidence_of_health(ran_once, script):
    tmp_path, env, add = ran_once
    add(record(NOW, _id="ahead", run_id="ahead", host="fast-clock", started_dtm=NOW + timedelta(days=1),
               ended_dtm=NOW + timedelta(days=1, seconds=5)))
    three_hours_later = NOW + timedelta(hours=3)  # the job is dead: its last true success is 3 h old
    check = script("batch_monitor.py", "check", env=env, clock=lambda: three_hours_later)
    assert check.returncode == 1, check.stdout  # WARNING, as 3 h without success is; never OK
    assert "last successful run 3.0 h ago" in check.stdout and "-" not in check.stdout.split(" h ago")[0][-6:]
    assert "1 dated in the future (host fast-clock: is its clock ahead?)" in check.stdout
    status = script("batch_monitor.py", "status", env=env, clock=lambda: three_hours_later)
    assert "Last successful run: 3.0 h ago" in status.stdout and "fast-clock" in status.stdout

    # A run in error: the metrics' last success is the true one, never the future-dated one.
    db = load(tmp_path / "db.bson")
    db[TASKS_COLLECTION].update_one({"_id": TASK_006}, {"$set": {"task_status": "open", "Template_Task_Id": 99}})
    save_database(db, tmp_path / "db.bson")  # refused: not an amend task of this job's template
    config = tmp_path / "config"
    shutil.copytree(main.DEFAULT_CONFIG_DIR, config)
    textfile = tmp_path / "drs_amend.prom"
    (config / "Job_Settings.ini").write_text(f"[METRICS]\nTEXTFILE = {textfile}\n")
    assert script("main.py", "--config-dir", str(config), "--log-dir", str(tmp_path / "logs"), env=env,
                  clock=lambda: three_hours_later).returncode == 1
    figures = samples(textfile)
    assert figures["drs_amend_last_success_timestamp_seconds"] <= figures["drs_amend_last_run_timestamp_seconds"]
    true_success = min(run["ended_dtm"] for run in load(tmp_path / "db.bson")[RUN_HISTORY_COLLECTION].find())
    assert figures["drs_amend_last_success_timestamp_seconds"] == pytest.approx(
        (true_success.replace(tzinfo=None) - datetime(1970, 1, 1)).total_seconds())
