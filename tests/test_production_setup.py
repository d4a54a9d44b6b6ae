"""Setting up a database for production (issue 17): database_update.py --indexes creates or updates the
job's indexes and nothing else; the embedded data file is created by database_update.py only, and no script
creates a folder."""

import re
import shutil
from contextlib import contextmanager
from datetime import datetime

import pytest

import database_update
from amend_store import CASES_COLLECTION, INDEXES, RUN_HISTORY_COLLECTION, TASKS_COLLECTION
from database_update import ensure_indexes, index_change, job_indexes
from embedded.data_file import EmbeddedDatabaseFile, save_database
from history.store import RETENTION_INDEX
from tests.support import PROJECT_ROOT, load, new_database, one_line, store_of
from utils.Custom_Exceptions import DatabaseConnectionError, DatabaseUpdateError

NOW = datetime(2031, 3, 1, 12, 0)
JOB_INDEX_NAMES = [name for _, _, name in INDEXES]


@pytest.fixture
def loaded(tmp_path, script):
    """An embedded data file as a reset leaves it, then a run of the job: every collection holds documents."""
    env = {"DRS_MONGO_URI": f"embedded://{tmp_path / 'db.bson'}"}
    assert script("database_update.py", "--generate-history", "5", env=env).returncode == 0
    assert script("main.py", "--log-dir", str(tmp_path / "logs"), env=env).returncode == 0
    return tmp_path / "db.bson", env


def documents(path):
    database = load(path)
    return {name: list(database[name].find()) for name in sorted(database.list_collection_names())}


def index_lines(output):
    """{index name: what --indexes said of it}."""
    lines = [line.removeprefix("database_update: index ") for line in output.splitlines()
             if line.startswith("database_update: index ")]
    return {line.split(" of ")[0]: line.split(": ", 1)[1] for line in lines}


# --- --indexes ----------------------------------------------------------------------------------------

def test_indexes_creates_the_missing_ones_changes_no_document_and_keeps_them_the_second_time(loaded, script):
    path, env = loaded
    database = load(path)
    database[CASES_COLLECTION].drop_index("batch_case")
    database[TASKS_COLLECTION].drop_index("open_tasks")
    save_database(database, path)
    before = documents(path)

    first = script("database_update.py", "--indexes", env=env)
    assert first.returncode == 0, first.stderr
    said = index_lines(first.stdout)
    assert {name: said[name] for name in JOB_INDEX_NAMES} == {
        name: "created" if name in ("batch_case", "open_tasks") else "kept" for name in JOB_INDEX_NAMES}
    assert said[RETENTION_INDEX] == ("not used on the embedded default (each run deletes the runs past [HISTORY] "
                                     "RETENTION_DAYS)")
    assert first.stdout.splitlines()[-1].endswith(f": 2 created, 0 changed, {len(INDEXES) - 2} kept")
    assert documents(path) == before
    for collection, keys, name in INDEXES:
        assert load(path)[collection].index_information()[name]["key"] == keys

    second = script("database_update.py", "--indexes", env=env)
    assert second.returncode == 0
    assert [index_lines(second.stdout)[name] for name in JOB_INDEX_NAMES] == ["kept"] * len(INDEXES)
    assert documents(path) == before


def test_indexes_refuses_a_conflicting_index_and_changes_nothing(loaded, script):
    path, env = loaded
    database = load(path)
    database[CASES_COLLECTION].drop_index("batch_case")
    database[CASES_COLLECTION].create_index([("Case_Id", 1)], name="batch_case")
    database[TASKS_COLLECTION].drop_index("open_tasks")
    save_database(database, path)
    before = path.read_bytes()
    result = script("database_update.py", "--indexes", env=env)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines()[-1] == (
        "database_update: index batch_case of DRS.Tmp_Case_Distribution_DRC has the keys {Case_Id: 1} where the "
        "job's has {Case_Distribution_Batch_ID: 1, Case_Id: 1}; nothing was changed: drop it, then run --indexes "
        "again")
    assert path.read_bytes() == before  # open_tasks, which did not conflict, was not created either


def test_indexes_on_a_missing_embedded_file_says_to_create_it(tmp_path, script):
    result = script("database_update.py", "--indexes", env={"DRS_MONGO_URI": f"embedded://{tmp_path / 'db.bson'}"})
    assert result.returncode == 2
    assert "db.bson does not exist: create it with database_update.py" in one_line(result.stderr)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("task", [["--indexes"], ["--backup", "b.bson"], ["--restore", "b.bson"]])
@pytest.mark.parametrize("reset_option", [["--data-dir", "data"], ["--generate", "100"], ["--seed", "3"],
                                          ["--generate-history", "3"]])
def test_the_options_of_the_reset_are_refused_with_another_task(script, task, reset_option):
    result = script("database_update.py", *task, *reset_option)
    assert result.returncode == 2
    assert f"{reset_option[0]} belong(s) to the reset: not with {task[0]}" in one_line(result.stderr)


def test_indexes_backup_and_restore_exclude_one_another(script):
    result = script("database_update.py", "--indexes", "--backup", "b.bson")
    assert result.returncode == 2 and "not allowed with argument --indexes" in result.stderr


class ServerLike:
    """mongomock with the collMod a server has for a TTL index's period (mongomock has none); the commands
    it was sent."""

    def __init__(self, database):
        self.database = database
        self.commands = []

    def __getitem__(self, name):
        return self.database[name]

    def command(self, name, collection, index):
        self.commands.append((name, collection, index))
        indexes = self.database[collection]
        keys = indexes.index_information()[index["name"]]["key"]
        indexes.drop_index(index["name"])
        indexes.create_index(keys, name=index["name"], expireAfterSeconds=index["expireAfterSeconds"])


def said(changes):
    return {spec[2]: change for spec, change in changes}


def test_on_a_server_the_ttl_index_is_created_kept_then_its_period_changed_in_place():
    server = ServerLike(new_database())
    store = store_of(server)
    assert said(ensure_indexes(store, 30, NOW)) == {name: "created" for name in [*JOB_INDEX_NAMES, RETENTION_INDEX]}
    assert said(ensure_indexes(store, 30, NOW)) == {name: "kept" for name in [*JOB_INDEX_NAMES, RETENTION_INDEX]}
    assert server.commands == []
    assert said(ensure_indexes(store, 7, NOW))[RETENTION_INDEX] == "changed"
    assert server.commands == [("collMod", RUN_HISTORY_COLLECTION,
                                {"name": RETENTION_INDEX, "expireAfterSeconds": 7 * 86_400})]
    assert server[RUN_HISTORY_COLLECTION].index_information()[RETENTION_INDEX]["expireAfterSeconds"] == 7 * 86_400


@pytest.mark.parametrize("existing, message", [
    ({"mine": {"key": [("Case_Distribution_Batch_ID", 1), ("Case_Id", 1)], "v": 2}},
     "index mine of DRS.Tmp_Case_Distribution_DRC has the keys {Case_Distribution_Batch_ID: 1, Case_Id: 1} of the "
     "job's index batch_case; nothing was changed: drop it (or rename it batch_case), then run --indexes again"),
    ({"batch_case": {"key": [("Case_Distribution_Batch_ID", 1), ("Case_Id", 1)], "unique": True, "v": 2}},
     "index batch_case of DRS.Tmp_Case_Distribution_DRC has the options {'unique': True} where the job's has none"),
    ({"batch_case": {"key": [("Case_Distribution_Batch_ID", 1), ("Case_Id", 1)], "expireAfterSeconds": 60}},
     "index batch_case of DRS.Tmp_Case_Distribution_DRC has the options {'expireAfterSeconds': 60} where the job's "
     "has none; nothing was changed: drop it, then run --indexes again"),
])
def test_an_index_with_the_keys_or_the_name_of_one_of_the_jobs_and_other_options_is_a_conflict(existing, message):
    (batch_case,) = [spec for spec in job_indexes(None) if spec[2] == "batch_case"]
    with pytest.raises(DatabaseUpdateError, match="^" + re.escape(message)):
        index_change(existing, batch_case)


def test_what_a_server_adds_to_an_index_description_is_no_option():
    (batch_case,) = [spec for spec in job_indexes(None) if spec[2] == "batch_case"]
    described = {"key": [("Case_Distribution_Batch_ID", 1.0), ("Case_Id", 1)], "v": 2, "background": True,
                 "ns": "drs.x", "unique": False}
    assert index_change({"batch_case": described}, batch_case) == "kept"


def test_a_ttl_index_that_is_not_a_ttl_index_any_more_is_a_conflict():
    (retention,) = [spec for spec in job_indexes(30) if spec[2] == RETENTION_INDEX]
    with pytest.raises(DatabaseUpdateError, match="has the options none where the job's has "
                                                  r"\{'expireAfterSeconds': 2592000\}"):
        index_change({RETENTION_INDEX: {"key": [("ended_dtm", 1)], "v": 2}}, retention)


@pytest.fixture
def on_a_server(monkeypatch, tmp_path):
    """database_update.py against a mongodb:// URI, the session standing in for the server; its configuration."""
    server = ServerLike(new_database())

    @contextmanager
    def session(settings):
        yield server
    monkeypatch.setattr(database_update, "database_session", session)
    config = tmp_path / "config"
    shutil.copytree(PROJECT_ROOT / "config", config)
    return server, config, {"DRS_MONGO_URI": "mongodb://db.example.org/"}


def test_indexes_on_a_server_follow_the_retention_of_the_configuration(on_a_server, script):
    server, config, env = on_a_server
    job_settings = config / "Job_Settings.ini"
    without_retention = script("database_update.py", "--indexes", "--config-dir", str(config), env=env)
    assert without_retention.returncode == 0, without_retention.stderr
    assert index_lines(without_retention.stdout)[RETENTION_INDEX] == (
        "not used: [HISTORY] RETENTION_DAYS is not set (a run drops it)")
    assert without_retention.stdout.splitlines()[-1] == (
        f"database_update: indexes of drs_case_distribution_db on mongodb://db.example.org/: {len(INDEXES)} created, "
        "0 changed, 0 kept")
    job_settings.write_text(job_settings.read_text().replace("[HISTORY]\n", "[HISTORY]\nRETENTION_DAYS = 30\n"))
    created = script("database_update.py", "--indexes", "--config-dir", str(config), env=env)
    assert created.returncode == 0, created.stderr
    assert index_lines(created.stdout)[RETENTION_INDEX] == "created (expireAfterSeconds 2592000)"
    job_settings.write_text(job_settings.read_text().replace("RETENTION_DAYS = 30", "RETENTION_DAYS = 7"))
    changed = script("database_update.py", "--indexes", "--config-dir", str(config), env=env, clock=lambda: NOW)
    assert index_lines(changed.stdout)[RETENTION_INDEX] == "changed (expireAfterSeconds 604800)"
    assert changed.stdout.splitlines()[-1].endswith(f": 0 created, 1 changed, {len(INDEXES)} kept")
    assert server[RUN_HISTORY_COLLECTION].index_information()[RETENTION_INDEX]["expireAfterSeconds"] == 604_800


# --- the embedded data file: created by database_update.py only, in a folder that exists ---------------------

MISSING_FILE_COMMANDS = [("main.py", [], 2), ("main.py", ["--dry-run"], 2), ("batch_monitor.py", ["status"], 2),
                         ("batch_monitor.py", ["check"], 3), ("batch_monitor.py", ["audit"], 2),
                         ("database_update.py", ["--indexes"], 2), ("database_update.py", ["--backup", "b.bson"], 2)]


@pytest.mark.parametrize("name, args, code", MISSING_FILE_COMMANDS,
                         ids=[" ".join([name, *args]) for name, args, _ in MISSING_FILE_COMMANDS])
def test_a_missing_data_file_is_an_error_naming_it_and_nothing_is_created(tmp_path, script, monkeypatch, name, args,
                                                                         code):
    folder = tmp_path / "var"
    folder.mkdir()
    monkeypatch.chdir(tmp_path)
    logs = ["--log-dir", str(tmp_path / "logs")] if name == "main.py" else []
    result = script(name, *args, *logs, env={"DRS_MONGO_URI": f"embedded://{folder / 'typo.bson'}"})
    assert result.returncode == code
    output = (result.stdout + result.stderr).strip()
    assert len(output.splitlines()) == 1, output
    assert (f"embedded database file {folder / 'typo.bson'} does not exist: create it with database_update.py "
            f"(or correct the path of MONGO_URI / DRS_MONGO_URI)") in output
    assert list(folder.iterdir()) == [] and not (tmp_path / "b.bson").exists()


MISSING_FOLDER_COMMANDS = [("main.py", []), ("main.py", ["--dry-run"]), ("batch_monitor.py", ["status"]),
                           ("database_update.py", []), ("database_update.py", ["--indexes"]),
                           ("database_update.py", ["--restore", "backup.bson", "--yes"])]


@pytest.mark.parametrize("name, args", MISSING_FOLDER_COMMANDS,
                         ids=[" ".join([name, *args]) for name, args in MISSING_FOLDER_COMMANDS])
def test_no_script_creates_the_folder_of_the_data_file(tmp_path, script, saved_fixtures, monkeypatch, name, args):
    shutil.copy(saved_fixtures, tmp_path / "backup.bson")
    monkeypatch.chdir(tmp_path)
    logs = ["--log-dir", str(tmp_path / "logs")] if name == "main.py" else []
    path = tmp_path / "nonexistent" / "dir" / "db.bson"
    result = script(name, *args, *logs, env={"DRS_MONGO_URI": f"embedded://{path}"})
    assert result.returncode == 2
    assert one_line(result.stderr).endswith(  # a restore says so before it reads the backup
        f"the folder {path.parent} of embedded database file db.bson does not exist: create it, or correct the "
        f"path of MONGO_URI / DRS_MONGO_URI")
    assert not (tmp_path / "nonexistent").exists()


def test_the_reset_creates_the_data_file_in_a_folder_that_exists(tmp_path, script):
    result = script("database_update.py", env={"DRS_MONGO_URI": f"embedded://{tmp_path / 'new.bson'}"})
    assert result.returncode == 0
    assert load(tmp_path / "new.bson")[TASKS_COLLECTION].count_documents({}) > 0


def test_a_data_file_removed_while_a_run_waits_for_the_lock_is_missing_not_created_afresh(tmp_path, saved_fixtures,
                                                                                        monkeypatch):
    path = tmp_path / "db.bson"
    shutil.copy(saved_fixtures, path)
    session = EmbeddedDatabaseFile(path, "drs", lock_timeout_seconds=5)
    acquire = session._lock.acquire

    def acquire_while_the_file_is_removed(*args, **kwargs):
        path.unlink()
        return acquire(*args, **kwargs)

    monkeypatch.setattr(session._lock, "acquire", acquire_while_the_file_is_removed)
    with pytest.raises(DatabaseConnectionError, match="db.bson does not exist: create it with database_update.py"):
        with session:
            pass
    assert not path.exists() and not session._lock.is_locked


@pytest.mark.parametrize("script_name, arguments", [("main.py", []), ("database_update.py", []),
                                                    ("batch_monitor.py", ["status"])])
def test_a_folder_given_as_the_embedded_data_file_is_named_a_folder(script, tmp_path, script_name, arguments):
    (tmp_path / "var").mkdir()
    result = script(script_name, *arguments, env={"DRS_MONGO_URI": f"embedded://{tmp_path / 'var'}"})
    assert result.returncode == 2
    assert f"embedded database file {tmp_path / 'var'} is a folder: give the path of a file" in result.stderr
    assert list((tmp_path / "var").iterdir()) == []
