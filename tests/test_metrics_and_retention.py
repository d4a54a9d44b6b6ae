"""[METRICS] TEXTFILE: the node_exporter file after every run, read back with the client's own parser; and
[HISTORY] RETENTION_DAYS: the run history kept bounded."""

import shutil
from datetime import datetime, timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from amend_store import RUN_HISTORY_COLLECTION, TASKS_COLLECTION, utc_now
from embedded.data_file import save_database
from history.store import RETENTION_INDEX, keep_history_within
from tests.support import FIXED_NOW, PROJECT_ROOT, TASK_006, fixed_clock, fresh_db, load, one_line, store_of


@pytest.fixture
def workspace(tmp_path, script):
    config = tmp_path / "config"
    shutil.copytree(PROJECT_ROOT / "config", config)
    env = {"DRS_MONGO_URI": f"embedded://{tmp_path / 'db.bson'}"}
    assert script("database_update.py", env=env).returncode == 0

    def run(job_settings, clock=utc_now):
        (config / "Job_Settings.ini").write_text(job_settings)
        return script("main.py", "--config-dir", str(config), "--log-dir", str(tmp_path / "logs"), env=env,
                      clock=clock)
    return tmp_path, run


def samples(path):
    """{(metric name, labels): value} of a textfile."""
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(path.read_text()) for sample in family.samples}


def test_every_run_writes_its_figures_for_prometheus(workspace):
    tmp_path, run = workspace
    textfile = tmp_path / "textfile" / "drs_amend.prom"
    textfile.parent.mkdir()
    assert run(f"[METRICS]\nTEXTFILE = {textfile}\n").returncode == 0
    figures = samples(textfile)
    (record,) = load(tmp_path / "db.bson")[RUN_HISTORY_COLLECTION].find()
    ended = record["ended_dtm"].replace(tzinfo=None)
    assert figures[("drs_amend_last_run_timestamp_seconds", ())] == pytest.approx(
        (ended - datetime(1970, 1, 1)).total_seconds())
    assert figures[("drs_amend_last_success_timestamp_seconds", ())] == figures[
        ("drs_amend_last_run_timestamp_seconds", ())]
    assert figures[("drs_amend_last_run_duration_seconds", ())] == record["duration_seconds"]
    assert {labels[0][1]: value for (name, labels), value in figures.items() if name == "drs_amend_last_run_tasks"} \
        == {"completed": 2, "error": 0, "deferred": 0, "skipped": 0, "not_started": 0}
    assert figures[("drs_amend_last_run_cases_moved", ())] == 10
    assert figures[("drs_amend_last_run_batch_cases", ())] == record["batch_cases"] > 0
    assert figures[("drs_amend_last_run_exit_code", ())] == 0 and figures[("drs_amend_stuck_tasks", ())] == 0
    assert [path.name for path in textfile.parent.iterdir()] == ["drs_amend.prom"]  # no temporary file left

    first_success = figures[("drs_amend_last_success_timestamp_seconds", ())]
    db = load(tmp_path / "db.bson")
    db[TASKS_COLLECTION].update_one({"_id": TASK_006}, {"$set": {"task_status": "open", "Template_Task_Id": 99}})
    save_database(db, tmp_path / "db.bson")
    assert run(f"[METRICS]\nTEXTFILE = {textfile}\n").returncode == 1
    figures = samples(textfile)
    assert figures[("drs_amend_last_run_exit_code", ())] == 1
    assert figures[("drs_amend_last_success_timestamp_seconds", ())] == first_success  # the earlier run's
    assert figures[("drs_amend_last_run_tasks", (("outcome", "error"),))] == 1


def test_a_textfile_the_collector_would_ignore_is_a_configuration_error(workspace):
    _, run = workspace
    result = run("[METRICS]\nTEXTFILE = metrics/drs_amend.txt\n")
    assert result.returncode == 2 and "[METRICS] TEXTFILE must name a file ending in .prom" in one_line(
        result.stderr)


def test_a_textfile_that_cannot_be_written_is_logged_and_changes_no_exit_code(workspace):
    tmp_path, run = workspace
    result = run(f"[METRICS]\nTEXTFILE = {tmp_path / 'missing' / 'drs_amend.prom'}\n")
    assert result.returncode == 0
    assert "the metrics file" in result.stderr and "could not be written" in result.stderr
    assert "Traceback" not in result.stderr


def history(db, now, *days_ago):
    """Runs that ended the given numbers of days before `now`."""
    db[RUN_HISTORY_COLLECTION].insert_many([{"run_id": str(days), "started_dtm": now - timedelta(days=days),
                                             "ended_dtm": now - timedelta(days=days)} for days in days_ago])


def test_the_embedded_default_prunes_older_runs_at_the_end_of_a_run(workspace):
    tmp_path, run = workspace
    db = load(tmp_path / "db.bson")
    history(db, FIXED_NOW, 400, 31, 29)
    save_database(db, tmp_path / "db.bson")
    result = run("[HISTORY]\nRETENTION_DAYS = 30\n", clock=fixed_clock)
    assert result.returncode == 0 and f"removed 2 run(s) older than 30 day(s) from {RUN_HISTORY_COLLECTION}" \
        in result.stderr
    kept = [run["run_id"] for run in load(tmp_path / "db.bson")[RUN_HISTORY_COLLECTION].find()]
    assert kept[0] == "29" and len(kept) == 2  # and the run itself
    assert run("", clock=fixed_clock).returncode == 0  # no retention: nothing removed
    assert load(tmp_path / "db.bson")[RUN_HISTORY_COLLECTION].count_documents({}) == 3


def test_a_server_keeps_the_history_bounded_with_a_ttl_index():
    db = fresh_db()
    store, now = store_of(db), FIXED_NOW
    history(db, now, 400)
    indexes = db[RUN_HISTORY_COLLECTION].index_information

    assert keep_history_within(store, 30, now, ttl_index=True) == 0
    assert indexes()[RETENTION_INDEX]["expireAfterSeconds"] == 30 * 86_400
    assert indexes()[RETENTION_INDEX]["key"] == [("ended_dtm", 1)]
    keep_history_within(store, 30, now, ttl_index=True)  # unchanged: left as it is
    keep_history_within(store, 7, now, ttl_index=True)
    assert indexes()[RETENTION_INDEX]["expireAfterSeconds"] == 7 * 86_400
    keep_history_within(store, None, now, ttl_index=True)
    assert RETENTION_INDEX not in indexes() and "run_started" in indexes()
    keep_history_within(store, None, now, ttl_index=True)  # nothing to drop


@pytest.mark.parametrize("text, message", [("0", "RETENTION_DAYS must be"), ("36501", "RETENTION_DAYS must be"),
                                           ("a month", "RETENTION_DAYS must be an integer")])
def test_a_retention_out_of_bounds_is_refused(workspace, text, message):
    _, run = workspace
    result = run(f"[HISTORY]\nRETENTION_DAYS = {text}\n")
    assert result.returncode == 2 and message in one_line(result.stderr)


def test_a_retention_or_metrics_read_that_fails_is_logged_and_the_run_still_counts(workspace, monkeypatch):
    from pymongo.errors import OperationFailure

    import main
    from utils.Custom_Exceptions import DatabaseUpdateError

    tmp_path, run = workspace

    def fails(*_args, **_kwargs):
        raise DatabaseUpdateError("pruning the run history failed: disk full")

    def read_fails(*_args, **_kwargs):
        raise OperationFailure("not authorized on drs")
    monkeypatch.setattr(main, "keep_history_within", fails)
    monkeypatch.setattr(main, "fetch_last_successful_run", read_fails)
    textfile = tmp_path / "drs_amend.prom"
    result = run(f"[HISTORY]\nRETENTION_DAYS = 30\n[METRICS]\nTEXTFILE = {textfile}\n")
    assert result.returncode == 0 and "Traceback" not in result.stderr
    assert f"the retention of {RUN_HISTORY_COLLECTION} could not be applied: pruning the run history failed" \
        in result.stderr
    assert f"the figures of {textfile} could not be read: not authorized on drs" in result.stderr
    assert not textfile.exists()
    assert load(tmp_path / "db.bson")[RUN_HISTORY_COLLECTION].count_documents({}) == 1  # the run is recorded
