"""The embedded database's lock is a file's identity, not a path (issue 15, item 7): a run whose lock file
was removed or replaced, or whose data file was replaced, while it held the lock saves nothing over the
other process's work; a data file with several hard links (one lock per name) is refused."""

import os
import shutil

import pytest

import main as main_script
from amend_store import TASKS_COLLECTION
from embedded.data_file import EmbeddedDatabaseFile, LockLostError, save_database
from tests.support import TASK_006, load, one_line
from utils.config import DatabaseSettings
from utils.connectDB import database_session
from utils.Custom_Exceptions import DatabaseConnectionError

DB_NAME = "drs_case_distribution_db"
LOST_LOCK = "was removed or replaced while this run held it: another process may have run; nothing of this run " \
            "was saved"


@pytest.fixture
def path(tmp_path, saved_fixtures):
    shutil.copy(saved_fixtures, tmp_path / "db.bson")
    return tmp_path / "db.bson"


def settings_for(path):
    return DatabaseSettings(uri=f"embedded://{path}", db_name=DB_NAME, lock_timeout_seconds=2)


def first_run_holding_the_lock(path, create=False):
    """A run that has taken the lock and loaded the file, and writes something of its own."""
    first = EmbeddedDatabaseFile(path, DB_NAME, lock_timeout_seconds=2, create=create)
    first.__enter__()["first_run"].insert_one({"saved": True})
    return first


def a_second_run_saves(path):
    with database_session(settings_for(path)) as database:
        database["second_run"].insert_one({"saved": True})


def remove_the_lock(path):
    (path.parent / "db.bson.lock").unlink()


def replace_the_lock(path):
    lock = path.parent / "db.bson.lock"
    lock.unlink()
    lock.touch()


@pytest.mark.parametrize("disturb", [remove_the_lock, replace_the_lock])
def test_a_run_whose_lock_file_went_away_saves_nothing_over_the_next_run(path, disturb):
    first = first_run_holding_the_lock(path)
    disturb(path)
    a_second_run_saves(path)  # it could take the lock: the path names another file now
    saved = path.read_bytes()
    with pytest.raises(LockLostError, match=f"the lock file .*db.bson.lock {LOST_LOCK}"):
        first.__exit__(None, None, None)
    assert path.read_bytes() == saved
    names = load(path).list_collection_names()
    assert "second_run" in names and "first_run" not in names
    assert sorted(entry.name for entry in path.parent.iterdir()) == ["db.bson", "db.bson.lock"]


def test_a_run_whose_lock_was_removed_even_with_nobody_else_running_refuses_to_save(path):
    first = first_run_holding_the_lock(path)
    before = path.read_bytes()
    remove_the_lock(path)
    with pytest.raises(LockLostError, match=LOST_LOCK):
        first.__exit__(None, None, None)
    assert path.read_bytes() == before


def test_a_data_file_replaced_under_a_held_lock_is_not_saved_over(path):
    first = first_run_holding_the_lock(path)
    intruder = load(path)
    intruder["intruder"].insert_one({"saved": True})
    save_database(intruder, path)  # a process that ignores the lock
    saved = path.read_bytes()
    with pytest.raises(LockLostError, match=r"embedded database file .*db.bson was replaced or changed while this run "
                                            r"held its lock: another process wrote it; nothing of this run was saved"):
        first.__exit__(None, None, None)
    assert path.read_bytes() == saved


def test_a_data_file_created_under_a_held_lock_is_not_saved_over(tmp_path):
    path = tmp_path / "db.bson"
    first = first_run_holding_the_lock(path, create=True)  # as database_update.py creates the file
    intruder = load(path)
    intruder["intruder"].insert_one({"saved": True})
    save_database(intruder, path)
    with pytest.raises(LockLostError, match="was replaced or changed"):
        first.__exit__(None, None, None)
    assert load(path).list_collection_names() == ["intruder"]


def test_the_job_stops_with_one_error_when_its_lock_was_taken_away_and_the_other_run_keeps_its_work(
        path, script, monkeypatch, tmp_path):
    """The defect as reported: task 102 completed by a second run, then open again after the first run's save."""
    keep_history_bounded = main_script.keep_history_bounded

    def meanwhile(*args):
        keep_history_bounded(*args)
        remove_the_lock(path)  # an operator "unsticks" the job
        a_second_run_saves(path)

    monkeypatch.setattr(main_script, "keep_history_bounded", meanwhile)
    result = script("main.py", "--task-id", "102", "--log-dir", str(tmp_path / "logs"),
                    env={"DRS_MONGO_URI": f"embedded://{path}"})
    assert result.returncode == 2
    assert LOST_LOCK in result.stderr and "Traceback" not in result.stderr
    saved = load(path)
    assert "second_run" in saved.list_collection_names()
    assert saved[TASKS_COLLECTION].find_one({"_id": TASK_006})["task_status"] == "open"  # the first run's work: unsaved


def test_a_run_that_keeps_its_lock_saves(path):
    first = first_run_holding_the_lock(path)
    first.__exit__(None, None, None)
    assert "first_run" in load(path).list_collection_names()


def test_a_data_file_with_several_hard_links_is_refused_by_a_writer_and_left_unchanged(path, script, tmp_path):
    os.link(path, tmp_path / "other-name.bson")
    before = path.read_bytes()
    with pytest.raises(DatabaseConnectionError, match=r"other-name\.bson has 2 hard links, each of which would be "
                                                      r"locked apart; give the job one path to it"):
        with database_session(settings_for(tmp_path / "other-name.bson")):
            pass
    env = {"DRS_MONGO_URI": f"embedded://{path}"}
    result = script("main.py", "--log-dir", str(tmp_path / "logs"), env=env)
    assert result.returncode == 2 and "has 2 hard links" in result.stderr
    assert path.read_bytes() == before
    assert script("batch_monitor.py", "status", env=env).returncode == 0  # a reader takes no lock: no harm
    (tmp_path / "other-name.bson").unlink()
    assert script("main.py", "--log-dir", str(tmp_path / "logs"), env=env).returncode == 0


def test_the_refusal_is_one_line_for_database_update(path, script, tmp_path):
    os.link(path, tmp_path / "other-name.bson")
    result = script("database_update.py", env={"DRS_MONGO_URI": f"embedded://{path}"})
    assert result.returncode == 2 and "has 2 hard links" in one_line(result.stderr)
