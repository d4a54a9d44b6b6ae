"""The backlog (issue 17): open amend tasks and the wait of the oldest, judged by check, shown by status, the
dashboard and the metrics textfile."""

import shutil
from datetime import datetime, timedelta

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from amend_store import TASKS_COLLECTION
from embedded.data_file import save_database
from ops.backlog import Backlog, backlog_of
from ops.metrics import run_metrics
from ops.monitoring import CRITICAL, OK, WARNING, backlog_figure, evaluate_health
from tests.support import NO_BACKLOG, PROJECT_ROOT, Clock, history_of, load
from utils.config import Thresholds, load_thresholds
from utils.Custom_Exceptions import ConfigurationError

NOW = datetime(2031, 3, 4, 12, 0)


def test_the_backlog_counts_the_open_tasks_and_dates_the_oldest():
    tasks = [{"created_dtm": NOW - timedelta(hours=2)}, {"created_dtm": NOW - timedelta(hours=5)},
             {"created_dtm": "yesterday"}, {}]
    backlog = backlog_of(tasks)
    assert backlog == Backlog(open_tasks=4, oldest_open=NOW - timedelta(hours=5), undated=2)
    assert backlog.oldest_open_hours(NOW) == 5.0
    assert backlog.text(NOW) == "4 open task(s), the oldest waiting 5.0 h (2 without a created_dtm date)"
    assert backlog_of([]) == NO_BACKLOG and NO_BACKLOG.oldest_open_hours(NOW) is None
    assert NO_BACKLOG.text(NOW) == "0 open task(s)"


def test_a_task_created_ahead_of_now_has_waited_no_time():
    assert Backlog(1, NOW + timedelta(minutes=3)).oldest_open_hours(NOW) == 0.0


@pytest.mark.parametrize("open_tasks, waited_hours, state", [
    (0, None, OK), (99, 0.9, OK), (100, 0.0, WARNING), (1, 1.0, WARNING), (1000, 0.1, CRITICAL), (5, 6.0, CRITICAL),
    (150, 7.0, CRITICAL),
])
def test_check_judges_the_worse_of_the_count_and_the_wait(open_tasks, waited_hours, state):
    oldest = None if waited_hours is None else NOW - timedelta(hours=waited_hours)
    figure = backlog_figure(Backlog(open_tasks, oldest), NOW, Thresholds())
    assert figure.state == state and figure.name == "Backlog"
    assert figure.limits == "warning 100 task(s) or 1 h, critical 1000 or 6 h"


def test_check_reports_the_backlog_in_its_line_and_its_performance_data():
    backlog = Backlog(3, NOW - timedelta(hours=2))
    state, line = evaluate_health(history_of([]), None, 0, backlog, NOW, Thresholds())
    assert state == CRITICAL  # no successful run recorded
    assert "3 open task(s), the oldest waiting 2.0 h" in line
    assert " open_tasks=3 oldest_open_hours=2.00 " in line
    assert " open_tasks=0 oldest_open_hours=U " in evaluate_health(history_of([]), None, 0, NO_BACKLOG, NOW,
                                                                    Thresholds())[1]


def test_the_backlog_thresholds_are_read_from_monitor_ini_and_checked(tmp_path):
    (tmp_path / "monitor.ini").write_text("[CHECK]\nOPEN_TASKS_WARNING = 5\nOLDEST_OPEN_CRITICAL_HOURS = 2.5\n")
    thresholds = load_thresholds(tmp_path)
    assert (thresholds.open_tasks_warning, thresholds.oldest_open_critical_hours) == (5, 2.5)
    (tmp_path / "monitor.ini").write_text("[CHECK]\nOLDEST_OPEN_WARNING_HOURS = 3\nOLDEST_OPEN_CRITICAL_HOURS = 2\n")
    with pytest.raises(ConfigurationError, match="OLDEST_OPEN_WARNING_HOURS .* is above OLDEST_OPEN_CRITICAL_HOURS"):
        load_thresholds(tmp_path)


def samples(text):
    return {sample.name: sample.value for family in text_string_to_metric_families(text) for sample in family.samples}


def test_the_metrics_carry_the_open_tasks_and_the_oldest_ones_creation_time(tmp_path):
    run = {"ended_dtm": NOW, "duration_seconds": 1.0, "exit_code": 0, "cases_moved": 0}
    registry = run_metrics(run, NOW, 0, Backlog(2, NOW - timedelta(hours=1)))
    figures = samples(generate_latest(registry).decode())
    assert figures["drs_amend_open_tasks"] == 2
    assert figures["drs_amend_oldest_open_task_timestamp_seconds"] == (
        NOW - timedelta(hours=1) - datetime(1970, 1, 1)).total_seconds()
    empty = samples(generate_latest(run_metrics(run, NOW, 0, NO_BACKLOG)).decode())
    assert empty["drs_amend_open_tasks"] == 0 and "drs_amend_oldest_open_task_timestamp_seconds" not in empty


@pytest.fixture
def waiting_task(tmp_path, script):
    """The fixtures loaded, then their two open tasks created two hours before NOW (a backlog the job has not
    taken: no run since)."""
    env = {"DRS_MONGO_URI": f"embedded://{tmp_path / 'db.bson'}"}
    assert script("database_update.py", env=env, clock=Clock(NOW)).returncode == 0
    db = load(tmp_path / "db.bson")
    db[TASKS_COLLECTION].update_many({"task_status": "open"}, {"$set": {"created_dtm": NOW - timedelta(hours=2)}})
    save_database(db, tmp_path / "db.bson")
    config = tmp_path / "config"
    shutil.copytree(PROJECT_ROOT / "config", config)
    return env, config


def test_check_status_and_the_dashboard_show_the_backlog(tmp_path, script, waiting_task):
    env, config = waiting_task
    (config / "monitor.ini").write_text("[CHECK]\nLAST_SUCCESS_WARNING_HOURS = 8000\nLAST_SUCCESS_CRITICAL_HOURS = 8000"
                                        "\nOLDEST_OPEN_WARNING_HOURS = 1\nOLDEST_OPEN_CRITICAL_HOURS = 3\n")
    check = script("batch_monitor.py", "--config-dir", str(config), "check", env=env, clock=Clock(NOW))
    assert "2 open task(s), the oldest waiting 2.0 h" in check.stdout
    assert "open_tasks=2 oldest_open_hours=2.00" in check.stdout
    status = script("batch_monitor.py", "--config-dir", str(config), "status", env=env, clock=Clock(NOW))
    assert "Backlog: 2 open task(s), the oldest waiting 2.0 h" in status.stdout
    page = tmp_path / "report.html"
    assert script("batch_monitor.py", "--config-dir", str(config), "report", "--html", str(page), env=env,
                  clock=Clock(NOW)).returncode == 0
    assert "2 open task(s), the oldest waiting 2.0 h" in page.read_text()
