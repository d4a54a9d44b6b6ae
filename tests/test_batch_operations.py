"""Run history, main.py --dry-run / --task-id / --json, batch_monitor.py and e-mail alerts."""

import csv
import io
import json
import shutil
import socket
import ssl
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from aiosmtpd.controller import Controller

from amend_store import RUN_HISTORY_COLLECTION, TASKS_COLLECTION
from history.records import parse_run
from ops.monitoring import CRITICAL, OK, WARNING, evaluate_health, export, log_rows
from tests.support import NO_BACKLOG, PROJECT_ROOT, history_of, load, one_line
from utils.config import Thresholds, load_alert_settings, load_thresholds

NOW = datetime(2026, 11, 25, 12, 0)
PASSWORD = "pw-7f3a9"


REQUEST_005 = '"rtom": "CW", "donor_drc_id": "D2", "receiver_drc_id": "D1", "transfer_count": 2}'


def refuse_task_101(embedded, script):
    """Reset the embedded file with batch 005 asking for 3 CW cases of D2, which holds 3: refused."""
    data = embedded["path"] / "data"
    shutil.copytree(PROJECT_ROOT / "data", data)
    transactions = data / "Case_distribution_drc_transactions.json"
    text = transactions.read_text()
    assert text.count(REQUEST_005) == 1
    transactions.write_text(text.replace(REQUEST_005, REQUEST_005.replace("2}", "3}")))
    assert script("database_update.py", "--data-dir", str(data), env=embedded["env"]).returncode == 0


def run_record(hours_ago, exit_code=0, tasks=(), run_id=None):
    started = NOW - timedelta(hours=hours_ago)
    return {"run_id": run_id or f"run{hours_ago:06.2f}", "host": "h", "started_dtm": started,
            "ended_dtm": started + timedelta(seconds=5), "exit_code": exit_code, "duration_seconds": 5,
            "completed": sum(t["outcome"] == "completed" for t in tasks),
            "errored": sum(t["outcome"] == "error" for t in tasks),
            "deferred": sum(t["outcome"] == "deferred" for t in tasks),
            "cases_moved": sum(t["cases_moved"] for t in tasks),
            "tasks": list(tasks)}


def task(outcome, task_id=1, batch="005"):
    return {"_id": f"oid{task_id}", "Task_Id": task_id, "batch": batch, "outcome": outcome, "cases_moved": 4,
            "message": f"{outcome} message", "duration_seconds": 0.5}


# --- the pure core of batch_monitor -------------------------------------------------------

@pytest.mark.parametrize("window_runs, success_hours, stuck, state, text", [
    ([run_record(0.5, tasks=[task("completed")])], 0.5, 0, OK, "DRS-AMEND OK - last successful run 0.5 h ago"),
    ([run_record(3)], 3, 0, WARNING, "DRS-AMEND WARNING - last successful run 3.0 h ago"),
    ([], 7, 0, CRITICAL, "DRS-AMEND CRITICAL - last successful run 7.0 h ago"),
    ([], None, 0, CRITICAL, "DRS-AMEND CRITICAL - no successful run recorded"),
    ([run_record(1, 1, [task("error")] + [task("completed")] * 9)], 1, 0, WARNING,
     "failure rate 10% over 24 h (1 of 10"),
    ([run_record(1, 1, [task("error")] * 5 + [task("completed")] * 5)], 1, 0, CRITICAL, "failure rate 50%"),
    ([run_record(1, tasks=[task("deferred")])], 1, 0, OK, "failure rate 0% over 24 h (0 of 0 task(s))"),
    ([run_record(1)], 1, 1, WARNING, "1 stuck task(s)"),
    ([run_record(1)], 1, 3, CRITICAL, "3 stuck task(s)"),
])
def test_evaluate_health(window_runs, success_hours, stuck, state, text):
    success = None if success_hours is None else parse_run(run_record(success_hours))
    got_state, line = evaluate_health(history_of(window_runs), success, stuck, NO_BACKLOG, NOW, Thresholds())
    assert got_state == state
    assert line.startswith(text) or text in line
    assert "| last_success_hours=" in line and f"stuck_tasks={stuck}" in line
    if success_hours is None:
        assert "last_success_hours=U " in line  # unknown, in the monitoring-plugin convention


RUNS = history_of([run_record(30, 1, [task("error", 1, "005"), task("completed", 2, "006")], "old"),
                   run_record(2, 0, [task("completed", 3, "005")], "recent"),
                   run_record(1, 0, [], "idle")]).runs


@pytest.mark.parametrize("filters, expected", [
    ({}, [("old", 1), ("old", 2), ("recent", 3), ("idle", None)]),
    ({"status": "error"}, [("old", 1)]),
    ({"batch": "005"}, [("old", 1), ("recent", 3)]),
    ({"task_id": 2}, [("old", 2)]),
    ({"status": "completed", "batch": "006"}, [("old", 2)]),
])
def test_log_rows_filters(filters, expected):
    assert [(row["run_id"], row["Task_Id"]) for row in log_rows(RUNS, **filters)] == expected


def text_row_time(text):
    return text.splitlines()[1].split()[1]


def test_exports_csv_json_txt():
    rows = log_rows(RUNS, status="error")
    parsed = list(csv.DictReader(io.StringIO(export(rows, "csv"))))
    assert parsed[0]["Task_Id"] == "1" and parsed[0]["outcome"] == "error" and parsed[0]["message"] == "error message"
    assert parsed[0]["run_started"] == (NOW - timedelta(hours=30)).isoformat() + "+00:00"  # times say they are UTC
    assert json.loads(export(rows, "json"))[0]["batch"] == "005"
    assert json.loads(export(rows, "json"))[0]["run_started"].endswith("+00:00")
    assert text_row_time(export(rows, "txt")).endswith("+00:00")
    text = export(rows, "txt").splitlines()
    assert text[0].split()[:3] == ["run_id", "run_started", "host"] and "error message" in text[1]


# --- the scripts ------------------------------------------------------------------------

@pytest.fixture
def embedded(tmp_path, script):
    env = {"DRS_MONGO_URI": f"embedded://{tmp_path / 'db.bson'}"}
    assert script("database_update.py", env=env).returncode == 0
    return {"env": env, "logs": ["--log-dir", str(tmp_path / "logs")], "path": tmp_path}


def test_every_run_is_recorded_without_secrets(embedded, script):
    assert script("main.py", *embedded["logs"], env=embedded["env"]).returncode == 0
    assert script("main.py", *embedded["logs"], env=embedded["env"]).returncode == 0
    runs = list(load(embedded["path"] / "db.bson")[RUN_HISTORY_COLLECTION].find().sort("started_dtm", 1))
    assert len(runs) == 2
    first = runs[0]
    assert {"run_id", "host", "pid", "started_dtm", "ended_dtm", "duration_seconds", "version", "configuration",
            "tasks", "exit_code"} <= set(first)
    assert first["version"] == __import__("utils").__version__
    assert first["configuration"]["template_task_id"] == 3 and "db.bson" in first["configuration"]["database"]
    assert [(t["Task_Id"], t["batch"], t["outcome"], t["cases_moved"]) for t in first["tasks"]] == \
           [(101, "005", "completed", 4), (102, "006", "completed", 6)]
    assert all(t["duration_seconds"] >= 0 and t["message"] for t in first["tasks"])
    assert runs[1]["tasks"] == [] and runs[1]["exit_code"] == 0


def test_dry_run_plans_and_writes_nothing(embedded, script):
    db_before = load(embedded["path"] / "db.bson")
    before = {name: list(db_before[name].find()) for name in db_before.list_collection_names()}
    result = script("main.py", "--dry-run", *embedded["logs"], env=embedded["env"])
    assert result.returncode == 0, result.stderr
    assert "amend task 101 (6740a0000000000000000101) batch 005: would reassign 4 case(s)" in result.stdout
    assert "D1   CW    8       10     +2" in result.stdout
    db_after = load(embedded["path"] / "db.bson")
    assert {name: list(db_after[name].find()) for name in db_after.list_collection_names()} == before


def test_dry_run_json_shows_refusals_and_exits_1(embedded, script):
    refuse_task_101(embedded, script)
    result = script("main.py", "--dry-run", "--json", *embedded["logs"], env=embedded["env"])
    assert result.returncode == 1
    plans = json.loads(result.stdout)
    assert [p["Task_Id"] for p in plans] == [101, 102]
    assert "holds 3; moving 3 leaves 0" in plans[0]["refusal"] and plans[0]["cells"] == []
    assert plans[1]["refusal"] is None and plans[1]["cases_to_reassign"] == 6
    assert {"DRC_Id": "D1", "RTOM": "AG", "before": 5, "after": 7} in plans[1]["cells"]


def test_task_id_processes_only_that_task_and_json_reports_it(embedded, script):
    result = script("main.py", "--task-id", "102", "--json", *embedded["logs"], env=embedded["env"])
    assert result.returncode == 0
    report = json.loads(result.stdout)
    assert [t["Task_Id"] for t in report["tasks"]] == [102] and report["cases_moved"] == 6
    assert "DRS Amend run finished" in result.stderr and "DRS Amend run finished" not in result.stdout
    statuses = {(t["Task_Id"], t["task_type"][:4]): t["task_status"]
                for t in load(embedded["path"] / "db.bson")[TASKS_COLLECTION].find()}
    assert statuses == {(100, "Case"): "completed", (101, "Case"): "open", (102, "Case"): "completed",
                        (101, "Crea"): "open"}  # 100: the fixtures' earlier amend of batch 006


def test_task_id_must_be_an_integer(script):
    result = script("main.py", "--task-id", "abc")
    assert result.returncode == 2 and "invalid int value: 'abc'" in result.stderr


def test_monitor_commands_on_a_fresh_history(embedded, script):
    assert script("main.py", *embedded["logs"], env=embedded["env"]).returncode == 0
    status = script("batch_monitor.py", "status", env=embedded["env"])
    assert status.returncode == 0
    assert "Amend tasks by status: completed 3" in status.stdout  # with the fixtures' earlier amend of 006
    assert "Stuck in processing (lease expired): none" in status.stdout
    check = script("batch_monitor.py", "check", env=embedded["env"])
    assert check.returncode == 0 and check.stdout.startswith("DRS-AMEND OK - last successful run 0.0 h ago")
    out = embedded["path"] / "history.csv"
    logs = script("batch_monitor.py", "logs", "--status", "completed", "--batch", "006", "--export", "csv",
               "--out", str(out), env=embedded["env"])
    assert logs.returncode == 0 and logs.stdout == ""
    rows = list(csv.DictReader(out.open()))
    assert [(r["Task_Id"], r["cases_moved"]) for r in rows] == [("102", "6")]
    since = script("batch_monitor.py", "logs", "--since", "2999-01-01", "--export", "json", env=embedded["env"])
    assert json.loads(since.stdout) == []
    until = script("batch_monitor.py", "logs", "--until", "2999-01-01T00:00:00+02:00", "--task-id", "101",
                "--export", "txt", env=embedded["env"])
    assert until.returncode == 0 and "completed" in until.stdout.splitlines()[1]


def test_check_is_critical_without_any_run_and_unknown_on_a_broken_configuration(embedded, tmp_path, script):
    assert script("batch_monitor.py", "check", env=embedded["env"]).returncode == CRITICAL
    config = tmp_path / "config"
    shutil.copytree(PROJECT_ROOT / "config", config)
    (config / "monitor.ini").write_text("[CHECK]\nWINDOW_HOURS = soon\n")
    result = script("batch_monitor.py", "--config-dir", str(config), "check", env=embedded["env"])
    assert result.returncode == 3 and result.stdout.startswith("DRS-AMEND UNKNOWN - ")
    assert "WINDOW_HOURS must be an integer, got 'soon'" in result.stdout


def test_check_reports_stuck_tasks(embedded, script):
    path = embedded["path"] / "db.bson"
    from embedded.data_file import save_database

    db = load(path)
    db[TASKS_COLLECTION].update_one({"Task_Id": 101, "task_type": "Case Amend Planning among DRC"},
                                    {"$set": {"task_status": "processing", "claim_expires_dtm": datetime(2020, 1, 1)}})
    save_database(db, path)
    assert script("main.py", "--task-id", "102", *embedded["logs"], env=embedded["env"]).returncode == 0
    db = load(path)  # main.py recovered nothing of 101: --task-id limits recovery too
    assert db[TASKS_COLLECTION].find_one({"Task_Id": 101, "task_status": "processing"}) is not None
    check = script("batch_monitor.py", "check", env=embedded["env"])
    assert check.returncode == WARNING and "1 stuck task(s)" in check.stdout
    status = script("batch_monitor.py", "status", env=embedded["env"])
    assert "Stuck in processing (lease expired): 1" in status.stdout and "005" in status.stdout


@pytest.mark.parametrize("args, message", [
    (["logs", "--since", "yesterday"], "expected an ISO date such as 2026-11-25"),
    (["logs", "--status", "lost"], "invalid choice: 'lost'"),
    (["logs", "--export", "xml"], "invalid choice: 'xml'"),
    ([], "the following arguments are required: command"),
])
def test_monitor_argument_errors(args, message, script):
    result = script("batch_monitor.py", *args)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("command", [["status"], ["logs"]])
def test_status_and_logs_exit_2_on_a_configuration_error(tmp_path, command, script):
    result = script("batch_monitor.py", "--config-dir", str(tmp_path), *command)
    assert result.returncode == 2 and "DB_Config.ini is missing" in one_line(result.stderr)


def test_logs_out_to_an_unwritable_place(embedded, script):
    result = script("batch_monitor.py", "logs", "--out", str(embedded["path"] / "missing" / "x.csv"),
                    env=embedded["env"])
    assert result.returncode == 2 and "cannot write" in one_line(result.stderr)


def test_thresholds_are_read_from_monitor_ini(tmp_path):
    assert load_thresholds(PROJECT_ROOT / "config") == Thresholds(stuck_tasks_critical=3)
    (tmp_path / "monitor.ini").write_text("[CHECK]\nFAILURE_RATE_WARNING = 0.25\nSTUCK_TASKS_CRITICAL = 9\n")
    assert load_thresholds(tmp_path) == Thresholds(failure_rate_warning=0.25, stuck_tasks_critical=9)
    assert load_thresholds(tmp_path / "absent") == Thresholds()


# --- alerts against a real SMTP server on loopback -----------------------------------------

class Inbox:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.mail_from, envelope.rcpt_tos, envelope.content.decode()))
        return "250 OK"


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def smtp_server():
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield inbox, controller.port
    finally:
        controller.stop()


def alerts_config(tmp_path, port, extra=""):
    config = tmp_path / "config"
    shutil.copytree(PROJECT_ROOT / "config", config, dirs_exist_ok=True)
    (config / "alerts.ini").write_text(
        f"[SMTP]\nENABLED = yes\nHOST = 127.0.0.1\nPORT = {port}\nSENDER = drs@example.org\n"
        f"RECIPIENTS = ops@example.org, oncall@example.org\nSTARTTLS = no\n{extra}")
    return config


def test_a_task_in_error_sends_an_alert(embedded, smtp_server, script):
    inbox, port = smtp_server
    config = alerts_config(embedded["path"], port)
    refuse_task_101(embedded, script)
    result = script("main.py", "--config-dir", str(config), *embedded["logs"], env=embedded["env"])
    assert result.returncode == 1
    [(sender, recipients, content)] = inbox.messages
    assert sender == "drs@example.org" and recipients == ["ops@example.org", "oncall@example.org"]
    assert "Subject: [DRS Amend] 1 amend task(s) ended in error" in content
    assert "amend task 101 (6740a0000000000000000101) batch 005: ResourceBalanceError" in content


def test_no_alert_when_every_task_completes(embedded, smtp_server, script):
    inbox, port = smtp_server
    result = script("main.py", "--config-dir", str(alerts_config(embedded["path"], port)), *embedded["logs"],
                 env=embedded["env"])
    assert result.returncode == 0 and inbox.messages == []


def test_check_critical_sends_an_alert(embedded, smtp_server, script):
    inbox, port = smtp_server
    result = script("batch_monitor.py", "--config-dir", str(alerts_config(embedded["path"], port)), "check",
                 env=embedded["env"])
    assert result.returncode == CRITICAL
    [(_, _, content)] = inbox.messages
    assert "Subject: [DRS Amend] DRS-AMEND CRITICAL - no successful run recorded" in content


def test_an_unreachable_smtp_server_changes_no_exit_code(embedded, tmp_path, script):
    config = alerts_config(tmp_path, free_port())
    refuse_task_101(embedded, script)
    result = script("main.py", "--config-dir", str(config), *embedded["logs"], env=embedded["env"])
    assert result.returncode == 1 and "the alert e-mail could not be sent" in result.stderr
    check = script("batch_monitor.py", "--config-dir", str(config), "check", env=embedded["env"])
    assert check.returncode == CRITICAL  # 1 of 2 tasks failed: 50%, and no successful run
    assert "the alert e-mail could not be sent" in check.stderr


def test_smtp_credentials_come_from_the_environment(embedded, tmp_path, script):
    config = alerts_config(tmp_path, 25, "USERNAME_ENV = DRS_SMTP_USER\nPASSWORD_ENV = DRS_SMTP_PASSWORD\n")
    result = script("main.py", "--config-dir", str(config), *embedded["logs"], env=embedded["env"])
    assert result.returncode == 2
    unset = "PASSWORD_ENV names the environment variable DRS_SMTP_PASSWORD, which is not set"
    assert unset in one_line(result.stderr) \
        or "USERNAME_ENV names the environment variable DRS_SMTP_USER, which is not set" in one_line(result.stderr)
    settings = load_alert_settings(config, environ={"DRS_SMTP_USER": "ops", "DRS_SMTP_PASSWORD": PASSWORD})
    assert (settings.username, settings.password) == ("ops", PASSWORD) and PASSWORD not in repr(settings)


class AcceptOperator:
    def __call__(self, server, session, envelope, mechanism, auth_data):
        from aiosmtpd.smtp import AuthResult

        return AuthResult(success=(auth_data.login, auth_data.password) == (b"ops", PASSWORD.encode()))


def test_starttls_with_login_verified_against_the_configured_ca(tmp_path):
    import trustme

    from ops.alerts import send_alert

    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    ca_file = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port(), tls_context=server_context,
                            require_starttls=True, authenticator=AcceptOperator(), auth_require_tls=True)
    controller.start()
    try:
        config = alerts_config(tmp_path, controller.port, f"USERNAME_ENV = SMTP_USER\nPASSWORD_ENV = SMTP_PASSWORD\n"
                                                          f"CA_FILE = {ca_file}\n")
        alerts_ini = config / "alerts.ini"
        alerts_ini.write_text(alerts_ini.read_text().replace("STARTTLS = no", "STARTTLS = yes"))
        settings = load_alert_settings(config, environ={"SMTP_USER": "ops", "SMTP_PASSWORD": PASSWORD})
        send_alert(settings, "test", "over TLS")
        assert "over TLS" in inbox.messages[0][2]
        with pytest.raises(ssl.SSLCertVerificationError):
            send_alert(replace(settings, ca_file=None), "test", "must not be sent")
        assert len(inbox.messages) == 1
    finally:
        controller.stop()


def test_a_missing_ca_file_is_a_configuration_error(tmp_path):
    from utils.Custom_Exceptions import ConfigurationError

    config = alerts_config(tmp_path, 25, "CA_FILE = /nonexistent/ca.pem\n")
    with pytest.raises(ConfigurationError, match="CA_FILE /nonexistent/ca.pem is not a file"):
        load_alert_settings(config, environ={})


def test_the_config_dir_may_follow_the_command(embedded, tmp_path, script):
    config = tmp_path / "other_config"
    shutil.copytree(PROJECT_ROOT / "config", config)
    (config / "monitor.ini").write_text("[CHECK]\nWINDOW_HOURS = 1\n")
    before = script("batch_monitor.py", "--config-dir", str(config), "check", env=embedded["env"])
    after = script("batch_monitor.py", "check", "--config-dir", str(config), env=embedded["env"])
    assert before.stdout == after.stdout and "over 1 h" in after.stdout
    both = script("batch_monitor.py", "--config-dir", str(tmp_path / "nowhere"), "check", "--config-dir", str(config),
                  env=embedded["env"])
    assert "over 1 h" in both.stdout
