"""main.py and database_update.py as an operator runs them: exit codes, stdout, stderr. They run in
this process (the `script` fixture); a few run as subprocesses, as cron runs them."""

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta

import pytest

from amend_store import INDEXES, RUN_HISTORY_COLLECTION, TASKS_COLLECTION
from tests.support import PROJECT_ROOT, Clock, cells, load, new_database, one_line, store_of, uri_with_password
from tests.support import run_script as run

PASSWORD = "hunter2-secret"


@pytest.fixture
def workspace(tmp_path):
    """A folder outside the project, an embedded data file in it, logs written there too."""
    return {"env": {"DRS_MONGO_URI": f"embedded://{tmp_path / 'db.bson'}"},
            "logs": ["--log-dir", str(tmp_path / "logs")], "path": tmp_path}


def test_reset_then_run_on_an_embedded_file(workspace):
    reset = run("database_update.py", "--yes", env=workspace["env"], cwd=workspace["path"])
    assert reset.returncode == 0, reset.stderr
    assert "DRS.Tmp_Case_Distribution_DRC 80" in reset.stdout
    job = run("main.py", *workspace["logs"], env=workspace["env"], cwd=workspace["path"])
    assert job.returncode == 0, job.stderr
    assert ("2 task(s) completed, 0 errored, 0 deferred (batch busy), 0 skipped (claimed by another run), "
            "10 case(s) moved") in job.stderr
    db = load(workspace["path"] / "db.bson")
    assert cells(db, "005") == {("D1", "CW"): 10, ("D1", "AD"): 4, ("D1", "AG"): 3,
                                ("D2", "CW"): 1, ("D2", "AD"): 7, ("D2", "AG"): 6}
    assert (workspace["path"] / "logs" / "drs_amend.log").read_text().count("completed") >= 2
    again = run("main.py", *workspace["logs"], env=workspace["env"], cwd=workspace["path"])
    assert again.returncode == 0 and "0 task(s) completed" in again.stderr


def test_a_task_in_error_gives_exit_code_1(workspace, script):
    data = workspace["path"] / "data"
    shutil.copytree(PROJECT_ROOT / "data", data)
    transactions = data / "Case_distribution_drc_transactions.json"
    transactions.write_text(transactions.read_text().replace('"transfer_count": 2}', '"transfer_count": 3}'))
    assert script("database_update.py", "--data-dir", str(data), env=workspace["env"]).returncode == 0
    job = script("main.py", *workspace["logs"], env=workspace["env"])
    assert job.returncode == 1
    assert "1 task(s) completed, 1 errored" in job.stderr
    task = load(workspace["path"] / "db.bson")["System_tasks"].find_one({"Task_Id": 101, "task_status": "error"})
    assert "holds 3; moving 3 leaves 0" in task["status_description"]


def test_missing_configuration_folder(workspace, script):
    result = script("main.py", "--config-dir", str(workspace["path"] / "nowhere"), *workspace["logs"])
    assert result.returncode == 2
    assert "DB_Config.ini is missing" in one_line(result.stderr)


@pytest.fixture
def config_copy(tmp_path):
    folder = tmp_path / "config"
    shutil.copytree(PROJECT_ROOT / "config", folder)
    return folder


BROKEN_CONFIGURATIONS = [
    ("DB_Config.ini", "[DATABASE]\nMONGO_URI = embedded://x.bson\n", "DB_NAME is missing or empty"),
    ("DB_Config.ini", "[DB]\nMONGO_URI = embedded://x.bson\n", "has no [DATABASE] section"),
    ("DB_Config.ini", None, "DB_Config.ini is missing"),
    ("DB_Config.ini", b"\xff\xfe[DATABASE]", "DB_Config.ini cannot be read"),
    ("Set_Template_TaskID.ini", "[TEMPLATE_TASK]\nTEMPLATE_TASK_ID = abc\n", "must be an integer, got 'abc'"),
    ("Set_Template_TaskID.ini", "[TEMPLATE_TASK]\nTEMPLATE_TASK_ID = 3.5\n", "must be an integer, got '3.5'"),
    ("Set_Template_TaskID.ini", "[TEMPLATE_TASK]\n", "TEMPLATE_TASK_ID is missing or empty"),
    ("Set_Template_TaskID.ini", None, "Set_Template_TaskID.ini is missing"),
    ("loggers.ini", "[loggers]\nkeys=root\n", "loggers.ini is not usable"),
    ("loggers.ini", b"\x80\x81 not text", "loggers.ini is not usable"),
    ("loggers.ini", None, "loggers.ini is missing"),
    ("Job_Settings.ini", "[BALANCING]\nMIN_SHARE_KEPT = 2\n", "MIN_SHARE_KEPT must be at least 0 and below 1"),
    ("Job_Settings.ini", "[RETRY]\nATTEMPTS = many\n", "ATTEMPTS must be an integer, got 'many'"),
]


@pytest.mark.parametrize("name, text, message", BROKEN_CONFIGURATIONS)
def test_broken_configuration(workspace, config_copy, name, text, message, script):
    if text is None:
        (config_copy / name).unlink()
    elif isinstance(text, bytes):
        (config_copy / name).write_bytes(text)
    else:
        (config_copy / name).write_text(text)
    result = script("main.py", "--config-dir", str(config_copy), *workspace["logs"], env=workspace["env"])
    assert result.returncode == 2
    assert message in one_line(result.stderr)
    assert not (workspace["path"] / "db.bson").exists()


def test_unreachable_server_fails_fast_without_leaking_the_password(workspace, config_copy, script):
    ini = config_copy / "DB_Config.ini"
    ini.write_text(ini.read_text().replace("SERVER_SELECTION_TIMEOUT_MS = 5000", "SERVER_SELECTION_TIMEOUT_MS = 300"))
    started = time.monotonic()
    result = script("main.py", "--config-dir", str(config_copy), *workspace["logs"],
                 env={"DRS_MONGO_URI": uri_with_password("operator", PASSWORD, "127.0.0.1:1/")})
    assert time.monotonic() - started < 20
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert f"cannot reach MongoDB at {uri_with_password('operator', '***', '127.0.0.1:1/')}" in line
    logs = "".join(p.read_text() for p in (workspace["path"] / "logs").iterdir())
    assert PASSWORD not in result.stderr + result.stdout + logs


def test_help_explains_the_job():
    result = run("main.py", "--help")
    assert result.returncode == 0
    for text in ("Case Amend Planning among DRC", "DRS_MONGO_URI", "TEMPLATE_TASK_ID", "exit codes",
                 "2    configuration"):
        assert text in result.stdout


def test_unknown_argument_is_a_usage_error(script):
    result = script("main.py", "--no-such-option")
    assert result.returncode == 2 and "unrecognized arguments" in result.stderr


def test_reset_refuses_a_server_without_yes(workspace, script):
    result = script("database_update.py",
                    env={"DRS_MONGO_URI": uri_with_password("operator", PASSWORD, "127.0.0.1:1/")})
    assert result.returncode == 1
    assert "refused" in one_line(result.stderr) and PASSWORD not in result.stderr


def test_reset_with_yes_reports_an_unreachable_server(config_copy, script):
    ini = config_copy / "DB_Config.ini"
    ini.write_text(ini.read_text().replace("SERVER_SELECTION_TIMEOUT_MS = 5000", "SERVER_SELECTION_TIMEOUT_MS = 300"))
    result = script("database_update.py", "--yes", "--config-dir", str(config_copy),
                 env={"DRS_MONGO_URI": "mongodb://127.0.0.1:1/"})
    assert result.returncode == 2 and "cannot reach MongoDB" in one_line(result.stderr)


@pytest.mark.parametrize("name, content, message", [
    ("System_tasks.json", None, "System_tasks.json is missing"),
    ("Template_task.json", "[{]", "Template_task.json is not valid Extended JSON"),
    ("DRS.Tmp_Case_Distribution_DRC.json", "[1, 2]", "element 0 is not an object"),
    ("Case_distribution_drc_transactions.json", '[{"x": {"$date": "never"}}]', "not valid Extended JSON"),
    ("DRS_Database.Case_Distribution_DRC_Summary.json", '[{"_id": {"$oid": "zz"}}]', "not valid Extended JSON"),
    ("System_tasks.json", '{"n": {"$numberLong": "x"}}', "not valid Extended JSON"),
])
def test_reset_with_a_bad_fixture_deletes_nothing(workspace, name, content, message, script):
    assert script("database_update.py", env=workspace["env"]).returncode == 0
    before = (workspace["path"] / "db.bson").read_bytes()
    data = workspace["path"] / "data"
    shutil.copytree(PROJECT_ROOT / "data", data)
    if content is None:
        (data / name).unlink()
    else:
        (data / name).write_text(content)
    result = script("database_update.py", "--data-dir", str(data), env=workspace["env"])
    assert result.returncode == 2
    assert message in one_line(result.stderr)
    assert (workspace["path"] / "db.bson").read_bytes() == before


def test_reset_accepts_a_single_document_and_creates_indexes(workspace, script):
    data = workspace["path"] / "data"
    shutil.copytree(PROJECT_ROOT / "data", data)
    templates = json.loads((data / "Template_task.json").read_text())
    (data / "Template_task.json").write_text(json.dumps(templates[0]))
    assert script("database_update.py", "--data-dir", str(data), env=workspace["env"]).returncode == 0
    db = load(workspace["path"] / "db.bson")
    assert db["Template_task"].count_documents({}) == 1
    assert "batch_case" in db["DRS.Tmp_Case_Distribution_DRC"].index_information()
    assert db["System_tasks"].find_one({"Task_Id": 102})["created_dtm"].tzinfo is None


def test_reset_asks_before_deleting_a_server_database():
    from database_update import confirmed
    from utils.config import DatabaseSettings

    server = DatabaseSettings(uri="mongodb://db:27017/", db_name="prod")
    questions = []

    def answer(text):
        return lambda question: questions.append(question) or text

    assert confirmed(server, assume_yes=False, ask=answer("yes"), interactive=True)
    assert not confirmed(server, assume_yes=False, ask=answer("y"), interactive=True)
    assert not confirmed(server, assume_yes=False, ask=answer("yes"), interactive=False)
    assert confirmed(server, assume_yes=True, ask=answer("no"), interactive=True)
    assert confirmed(DatabaseSettings(uri="embedded://x.bson", db_name="d"), assume_yes=False,
                     ask=answer("no"), interactive=True)
    assert len(questions) == 2 and "prod on mongodb://db:27017/" in questions[0]


def test_indexes_are_created_idempotently():
    db = new_database()
    store = store_of(db)
    store.create_indexes()
    store.create_indexes()
    for collection, keys, name in INDEXES:
        assert db[collection].index_information()[name]["key"] == keys


def test_every_entry_point_reads_the_time_from_the_clock_it_is_given(workspace, script):
    """Years from any real date: what the scripts record and judge follows the clock they are given."""
    when = datetime(2031, 3, 1, 12, 0)
    env = workspace["env"]
    assert script("database_update.py", "--generate-history", "3", env=env, clock=Clock(when)).returncode == 0
    generated = list(load(workspace["path"] / "db.bson")[RUN_HISTORY_COLLECTION].find())
    assert all(when - timedelta(hours=7) < run["ended_dtm"] < when for run in generated)

    later = when + timedelta(hours=1)
    assert script("main.py", *workspace["logs"], env=env, clock=Clock(later)).returncode == 0
    db = load(workspace["path"] / "db.bson")
    (recorded,) = db[RUN_HISTORY_COLLECTION].find({"generated": {"$exists": False}})
    assert recorded["started_dtm"] == recorded["ended_dtm"] == later
    assert {task["status_changed_dtm"] for task in db[TASKS_COLLECTION].find({"task_status": "completed",
                                                                             "end_dtm": {"$exists": True}})
            if task["Task_Id"] != 100} == {later}

    check = script("batch_monitor.py", "check", env=env, clock=Clock(later + timedelta(hours=3)))
    assert check.returncode == 1 and "last successful run 3.0 h ago" in check.stdout


def test_a_run_against_a_server_never_loads_the_embedded_engine(config_copy, tmp_path):
    """mongomock and its patches are the embedded default's: a mongodb:// run must not depend on them."""
    (config_copy / "DB_Config.ini").write_text("[DATABASE]\nMONGO_URI = mongodb://127.0.0.1:9/\n"
                                               "DB_NAME = drs\nSERVER_SELECTION_TIMEOUT_MS = 100\n")
    probe = ("import sys, main, batch_monitor, database_update\n"
             f"code = main.main(['--config-dir', {str(config_copy)!r}, '--log-dir', {str(tmp_path / 'logs')!r}])\n"
             "print(code, sorted(name for name in sys.modules if 'mongomock' in name or 'embedded' in name))\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=PROJECT_ROOT,
                            env={k: v for k, v in os.environ.items() if not k.startswith("DRS_")}, timeout=60)
    assert result.stdout.strip() == "2 []", result.stderr
    assert "cannot reach MongoDB at mongodb://127.0.0.1:9/" in result.stderr
