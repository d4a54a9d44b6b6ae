"""Monitoring that sees trends: the slowdown of check, failure patterns in status and logs --group-by reason."""

import csv
import io
import json
from datetime import datetime, timedelta

import pytest

from amend_store import RUN_HISTORY_COLLECTION
from history.records import History, MalformedRecord, parse_run
from ops.monitoring import (
    CRITICAL,
    OK,
    WARNING,
    evaluate_health,
    log_rows,
    reason_groups,
    reason_pattern,
    seconds_per_thousand_cases,
    slowdown,
)
from tests.support import NO_BACKLOG, Clock, history_of
from utils.config import Thresholds

NOW = datetime(2026, 11, 26, 12, 0)


def run(minutes_ago, duration=1.0, batch_cases=1000, tasks=()):
    """A run record as main.py writes it: its counts those of its tasks (by default one completed task of a batch
    of `batch_cases` cases), exit code 1 when one ended in error."""
    started = NOW - timedelta(minutes=minutes_ago)
    tasks = [dict(task) for task in tasks] or [{"outcome": "completed"}]
    tasks[0]["batch_cases"] = batch_cases
    outcomes = [task["outcome"] for task in tasks]
    return {"run_id": f"run{minutes_ago:06d}", "host": "h", "started_dtm": started,
            "ended_dtm": started + timedelta(seconds=duration), "duration_seconds": duration,
            "batch_cases": batch_cases, "exit_code": int("error" in outcomes), "completed": outcomes.count("completed"),
            "errored": outcomes.count("error"), "tasks": tasks}


def error(message, task_id=1):
    return {"_id": task_id, "Task_Id": task_id, "batch": "B", "outcome": "error", "message": message}


def newest_first(runs):
    return history_of(runs).runs


@pytest.mark.parametrize("last_seconds, state", [(2.9, OK), (3.1, WARNING), (9.9, WARNING), (10.0, CRITICAL)])
def test_a_run_slower_per_thousand_cases_than_the_windows_median_is_flagged(last_seconds, state):
    # earlier runs: 1 s per 1,000 cases, whatever their size
    earlier = [run(10 * n, duration=10 * n, batch_cases=10_000 * n) for n in range(1, 7)]
    runs = newest_first(earlier + [run(0, duration=last_seconds * 20, batch_cases=20_000)])
    judged, text, per_thousand, ratio = slowdown(runs, Thresholds())
    assert (judged, per_thousand, ratio) == (state, pytest.approx(last_seconds), pytest.approx(last_seconds))
    assert text == f"last comparable run {last_seconds:.1f}x the median time per 1,000 cases"
    check_state, line = evaluate_health(History(runs=runs), runs[0], 0, NO_BACKLOG, NOW, Thresholds())
    assert check_state == state
    assert f"seconds_per_1000_cases={last_seconds:.3f} slowdown={last_seconds:.2f}" in line


def test_speed_is_not_judged_without_enough_comparable_runs():
    runs = newest_first([run(10 * n, batch_cases=10_000) for n in range(1, 5)]
                        + [run(0, duration=1000, batch_cases=10_000)]
                        + [run(1, batch_cases=0), run(4, duration=0.5, batch_cases=9_999)])  # too few cases to compare
    state, text, per_thousand, ratio = slowdown(runs, Thresholds())
    assert (state, text, per_thousand, ratio) == (OK, "speed not judged (4 of 5 earlier runs)", 100.0, None)
    assert slowdown(runs, Thresholds(comparable_runs=4))[0] == CRITICAL
    empty = evaluate_health(history_of([]), None, 0, NO_BACKLOG, NOW, Thresholds())[1]
    assert "seconds_per_1000_cases=U slowdown=U" in empty
    assert seconds_per_thousand_cases(parse_run(run(1, batch_cases=0))) is None


@pytest.mark.parametrize("malformed", [dict(run(0), batch_cases=True), dict(run(0), batch_cases=None),
                                       dict(run(0), duration_seconds=-1.0), dict(run(0), duration_seconds="x"),
                                       dict(run(0), duration_seconds=float("nan"))])
def test_a_run_record_whose_figures_are_no_figures_is_no_run(malformed):
    with pytest.raises(MalformedRecord):
        parse_run(malformed)


def test_a_warning_above_its_critical_slowdown_is_refused(tmp_path):
    from utils.config import load_thresholds
    from utils.Custom_Exceptions import ConfigurationError

    (tmp_path / "monitor.ini").write_text("[CHECK]\nSLOWDOWN_WARNING = 20\n")
    with pytest.raises(ConfigurationError, match=r"SLOWDOWN_WARNING \(20.0\) is above SLOWDOWN_CRITICAL"):
        load_thresholds(tmp_path)
    (tmp_path / "monitor.ini").write_text("[CHECK]\nCOMPARABLE_RUNS = 0\n")
    with pytest.raises(ConfigurationError, match="COMPARABLE_RUNS"):
        load_thresholds(tmp_path)


def test_reasons_that_differ_only_in_ids_and_counts_form_one_pattern():
    first = "ResourceBalanceError: donor DRC 'D4' holds 3 case(s) of RTOM 'CW'; it must keep 1"
    second = "ResourceBalanceError: donor DRC 'D7' holds 15 case(s) of RTOM 'AD'; it must keep 3"
    assert reason_pattern(first) == reason_pattern(second) == (
        "ResourceBalanceError: donor DRC '…' holds <n> case(s) of RTOM '…'; it must keep <n>")
    assert reason_pattern("task 6740a0000000000000000101 lost its claim at 2026-11-26 10:00:01") == \
        "task <id> lost its claim at <n>-<n>-<n> <n>"
    assert reason_pattern("batch 005 has no cases") != reason_pattern("batch 005 has no transaction")


def test_failure_patterns_are_counted_newest_example_last_seen():
    runs = [run(30, tasks=[error("donor DRC 'D4' holds 3"), error("template 3 missing")]),
            run(20, tasks=[error("donor DRC 'D7' holds 5")]),
            run(10, tasks=[error("template 4 missing"), {"outcome": "completed", "message": "Amended batch 1"}])]
    groups = reason_groups(log_rows(history_of(runs).runs, status="error"))
    assert [(g.pattern, g.count, g.latest_example) for g in groups] == [
        ("template <n> missing", 2, "template 4 missing"),
        ("donor DRC '…' holds <n>", 2, "donor DRC 'D7' holds 5")]
    assert groups[0].first_seen == NOW - timedelta(minutes=30) and groups[0].last_seen == NOW - timedelta(minutes=10)


def test_status_and_logs_group_by_reason(tmp_path, script):
    from embedded.data_file import save_database
    from tests.support import load

    env = {"DRS_MONGO_URI": f"embedded://{tmp_path / 'db.bson'}"}
    assert script("database_update.py", env=env).returncode == 0
    db = load(tmp_path / "db.bson")
    now = NOW
    db[RUN_HISTORY_COLLECTION].insert_many([
        dict(run(0, tasks=[error("donor DRC 'D4' holds 3", 1), error("donor DRC 'D9' holds 8", 2)]),
             started_dtm=now - timedelta(hours=1)),
        dict(run(1, tasks=[error("template 3 missing", 3), dict(error("Amended batch 005 seq 2", 4),
                                                                outcome="completed")]),
             run_id="old", started_dtm=now - timedelta(days=3))])
    save_database(db, tmp_path / "db.bson")

    status = script("batch_monitor.py", "status", env=env, clock=Clock(NOW))
    assert "Failure patterns over 24 h:\n  2 x donor DRC '…' holds <n>\n      latest (" in status.stdout
    assert "template" not in status.stdout  # outside the window
    grouped = script("batch_monitor.py", "logs", "--group-by", "reason", "--export", "csv", env=env, clock=Clock(NOW))
    rows = list(csv.DictReader(io.StringIO(grouped.stdout)))
    assert [(r["outcome"], r["count"], r["pattern"]) for r in rows] == [
        ("error", "2", "donor DRC '…' holds <n>"), ("error", "1", "template <n> missing")]
    assert rows[0]["first_seen"].endswith("+00:00")
    completed = script("batch_monitor.py", "logs", "--group-by", "reason", "--status", "completed", "--export", "csv",
                       env=env, clock=Clock(NOW))
    assert [(r["outcome"], r["pattern"]) for r in csv.DictReader(io.StringIO(completed.stdout))] == [
        ("completed", "Amended batch <n> seq <n>")]
    as_json = json.loads(script("batch_monitor.py", "logs", "--group-by", "reason", "--export", "json",
                                env=env).stdout)
    assert as_json[1]["latest_example"] == "template 3 missing"
    text = script("batch_monitor.py", "logs", "--group-by", "reason", "--batch", "nope", env=env).stdout
    assert text.splitlines() == ["outcome  count  first_seen  last_seen  pattern  latest_example"]


def test_the_speed_is_judged_on_the_working_time_not_the_wait_for_the_lock():
    waited = dict(run(1, duration=61.0, batch_cases=20_000), lock_wait_seconds=60.0)
    assert seconds_per_thousand_cases(parse_run(waited)) == 0.05
    earlier = [run(10 * minutes, duration=1.0, batch_cases=20_000) for minutes in range(1, 7)]
    state, _, _, ratio = slowdown(history_of([waited, *earlier]).runs, Thresholds())
    assert (state, ratio) == (OK, 1.0)
