"""Backups of the embedded data file (issue 17): database_update.py --backup FILE writes a checked copy under the
data file's lock, never over an existing file; --restore FILE checks the backup in full, asks, and replaces the
data file, keeping the replaced one beside it."""

import shutil
from datetime import datetime

import pytest

from amend_store import TASKS_COLLECTION
from database_update import restore_confirmed
from embedded.data_file import TRAILER_SIZE, EmbeddedDatabaseFile
from tests.support import Clock, load, one_line
from utils.Custom_Exceptions import DatabaseConnectionError

RESTORED_AT = datetime(2031, 3, 1, 12, 0, 5)


@pytest.fixture
def data(tmp_path, saved_fixtures):
    """A data file holding the fixtures, and the scripts' environment."""
    path = tmp_path / "db.bson"
    shutil.copy(saved_fixtures, path)
    return path, {"DRS_MONGO_URI": f"embedded://{path}"}


def content(path):
    database = load(path)
    return {name: list(database[name].find()) for name in sorted(database.list_collection_names())}


def last_line(result):
    return result.stderr.splitlines()[-1] if result.returncode else result.stdout.splitlines()[-1]


def test_backup_then_restore_gives_back_the_same_data(data, script, tmp_path):
    path, env = data
    backup = tmp_path / "saved" / "before-the-run.bson"
    backup.parent.mkdir()
    before = content(path)
    backed_up = script("database_update.py", "--backup", str(backup), env=env)
    assert backed_up.returncode == 0, backed_up.stderr
    assert last_line(backed_up) == (f"database_update: backed up {path} to {backup} (104 document(s)); restore it "
                                    f"with database_update.py --restore {backup}")
    assert content(backup) == before  # a data file, its checksum checked as it is loaded

    assert script("main.py", "--log-dir", str(tmp_path / "logs"), env=env).returncode == 0
    after_the_run = path.read_bytes()
    assert content(path) != before

    restored = script("database_update.py", "--restore", str(backup), "--yes", env=env, clock=Clock(RESTORED_AT))
    assert restored.returncode == 0, restored.stderr
    replaced = tmp_path / "db.bson.replaced-20310301T120005Z"
    assert last_line(restored) == (f"database_update: restored {path} from {backup} (104 document(s)); the file it "
                                   f"replaced is kept as {replaced}")
    assert content(path) == before
    assert replaced.read_bytes() == after_the_run
    assert path.stat().st_nlink == replaced.stat().st_nlink == 1


def test_a_damaged_backup_is_refused_and_the_data_file_left_untouched(data, script, tmp_path):
    path, env = data
    backup = tmp_path / "backup.bson"
    assert script("database_update.py", "--backup", str(backup), env=env).returncode == 0
    damaged = bytearray(backup.read_bytes())
    damaged[len(damaged) // 2] ^= 0x01
    backup.write_bytes(bytes(damaged))
    before = path.read_bytes()
    result = script("database_update.py", "--restore", str(backup), "--yes", env=env)
    assert result.returncode == 2
    assert last_line(result) == (f"database_update: backup {backup} cannot be restored: it is damaged (its checksum "
                                 f"does not match its content); nothing was restored")
    assert path.read_bytes() == before
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["backup.bson", "db.bson", "db.bson.lock"]


@pytest.mark.parametrize("backup, reason", [
    (b"not a data file", "it is not a DRS Amend data file"),
    ("a folder", "it cannot be read: Is a directory"),
    (None, None),
])
def test_a_backup_that_is_no_data_file_or_is_missing_is_refused(data, script, tmp_path, backup, reason):
    path, env = data
    target = tmp_path / "backup.bson"
    if backup == "a folder":
        target.mkdir()
    elif backup is not None:
        target.write_bytes(backup)
    before = path.read_bytes()
    result = script("database_update.py", "--restore", str(target), "--yes", env=env)
    assert result.returncode == 2
    assert last_line(result) == (f"database_update: backup {target} cannot be restored: {reason}; nothing was restored"
                                 if reason else f"database_update: backup {target} does not exist; nothing was "
                                                f"restored")
    assert path.read_bytes() == before


def test_a_restore_asks_first(data, script, tmp_path):
    path, env = data
    backup = tmp_path / "backup.bson"
    shutil.copy(path, backup)
    before = path.read_bytes()
    result = script("database_update.py", "--restore", str(backup), env=env)  # no terminal: no answer
    assert result.returncode == 1
    assert last_line(result) == (f"database_update: refused to replace {path} by the backup {backup} without "
                                 f"confirmation; run it with --yes")
    assert path.read_bytes() == before and not list(tmp_path.glob("*.replaced-*"))


def test_the_question_of_a_restore():
    questions = []

    def answer(text):
        return lambda question: questions.append(question) or text

    assert restore_confirmed("db.bson", "b.bson", 104, assume_yes=False, ask=answer("yes"), interactive=True)
    assert not restore_confirmed("db.bson", "b.bson", 104, assume_yes=False, ask=answer("y"), interactive=True)
    assert not restore_confirmed("db.bson", "b.bson", 104, assume_yes=False, ask=answer("yes"), interactive=False)
    assert restore_confirmed("db.bson", "b.bson", 104, assume_yes=True, ask=answer("no"), interactive=True)
    assert questions == ["Replace the embedded database file db.bson by the backup b.bson (104 document(s))? The "
                         "replaced file is kept beside it. Type yes: "] * 2


def test_a_damaged_data_file_is_replaced_by_its_backup_and_kept_beside_it(data, script, tmp_path):
    path, env = data
    backup = tmp_path / "backup.bson"
    assert script("database_update.py", "--backup", str(backup), env=env).returncode == 0
    path.write_bytes(path.read_bytes()[:-TRAILER_SIZE])
    damaged = path.read_bytes()
    assert script("main.py", "--log-dir", str(tmp_path / "logs"), env=env).returncode == 2
    assert script("database_update.py", "--restore", str(backup), "--yes", env=env,
                  clock=Clock(RESTORED_AT)).returncode == 0
    assert content(path) == content(backup)
    assert (tmp_path / "db.bson.replaced-20310301T120005Z").read_bytes() == damaged


def test_a_restore_where_there_is_no_data_file_creates_it(data, script, tmp_path):
    path, env = data
    backup = tmp_path / "backup.bson"
    path.rename(backup)
    result = script("database_update.py", "--restore", str(backup), "--yes", env=env)
    assert result.returncode == 0
    assert last_line(result).endswith("(104 document(s)); there was no data file to keep")
    assert content(path) == content(backup)


def test_a_second_restore_within_the_same_second_replaces_nothing(data, script, tmp_path):
    path, env = data
    backup = tmp_path / "backup.bson"
    shutil.copy(path, backup)
    clock = Clock(RESTORED_AT)
    assert script("database_update.py", "--restore", str(backup), "--yes", env=env, clock=clock).returncode == 0
    before = path.read_bytes()
    again = script("database_update.py", "--restore", str(backup), "--yes", env=env, clock=clock)
    assert again.returncode == 2
    assert last_line(again) == (f"database_update: {tmp_path / 'db.bson.replaced-20310301T120005Z'} cannot be "
                                f"written: File exists; nothing was restored")
    assert path.read_bytes() == before
    assert not list(tmp_path.glob("*.tmp"))


def test_a_backup_never_overwrites_a_file(data, script, tmp_path):
    path, env = data
    backup = tmp_path / "backup.bson"
    backup.write_bytes(b"precious")
    result = script("database_update.py", "--backup", str(backup), env=env)
    assert result.returncode == 2
    assert last_line(result) == (f"database_update: backup {backup} exists already; a backup never overwrites a "
                                 f"file: give another name")
    assert backup.read_bytes() == b"precious"


def test_a_backup_created_meanwhile_is_not_overwritten_either(data, tmp_path, monkeypatch):
    path, _ = data
    backup = tmp_path / "backup.bson"
    data_file = EmbeddedDatabaseFile(path, "drs", lock_timeout_seconds=5)
    check_location = data_file.check_location

    def check_location_while_another_process_writes_the_backup():
        check_location()
        backup.write_bytes(b"precious")

    monkeypatch.setattr(data_file, "check_location", check_location_while_another_process_writes_the_backup)
    with pytest.raises(DatabaseConnectionError, match=f"^backup {backup} cannot be written: File exists; the data "
                                                      f"file was left unchanged$"):
        data_file.back_up(backup)
    assert backup.read_bytes() == b"precious" and not list(tmp_path.glob("*.tmp"))


def test_a_backup_into_a_folder_that_does_not_exist_is_refused(data, script, tmp_path):
    _, env = data
    result = script("database_update.py", "--backup", str(tmp_path / "missing" / "b.bson"), env=env)
    assert result.returncode == 2
    assert last_line(result) == f"database_update: the folder {tmp_path / 'missing'} of backup b.bson does not exist"
    assert not (tmp_path / "missing").exists()


def test_a_damaged_data_file_is_not_backed_up(data, script, tmp_path):
    path, env = data
    path.write_bytes(path.read_bytes()[:-1])
    result = script("database_update.py", "--backup", str(tmp_path / "backup.bson"), env=env)
    assert result.returncode == 2 and "is damaged" in one_line(result.stderr)
    assert not (tmp_path / "backup.bson").exists()


def test_a_backup_waits_for_the_lock_of_a_run(data, tmp_path):
    path, _ = data
    run = EmbeddedDatabaseFile(path, "drs", lock_timeout_seconds=5)
    run.__enter__()[TASKS_COLLECTION].delete_many({})  # a run halfway
    try:
        with pytest.raises(DatabaseConnectionError, match="stayed locked by another process for 0 s"):
            EmbeddedDatabaseFile(path, "drs", lock_timeout_seconds=0).back_up(tmp_path / "backup.bson")
        assert not (tmp_path / "backup.bson").exists()
    finally:
        run.__exit__(None, None, None)


@pytest.mark.parametrize("task, tool", [(["--backup", "b.bson"], "mongodump"),
                                        (["--restore", "b.bson", "--yes"], "mongorestore")])
def test_backup_and_restore_are_for_the_embedded_default_only(script, tmp_path, monkeypatch, task, tool):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "b.bson").write_bytes(b"x")
    result = script("database_update.py", *task, env={"DRS_MONGO_URI": "mongodb://db.example.org/"})
    assert result.returncode == 2
    assert one_line(result.stderr) == (f"database_update: {task[0]} is for the embedded default; "
                                       f"drs_case_distribution_db on mongodb://db.example.org/ is a server: use {tool}")
    assert (tmp_path / "b.bson").read_bytes() == b"x"


@pytest.mark.parametrize("name", ["db.bson.mybackup.tmp", "db.bson.lock.holder", "db.bson.saved", "db.bson"])
def test_a_backup_never_takes_a_name_the_data_file_keeps_beside_it(data, script, tmp_path, name):
    """A run removes what a save left (db.bson.*.tmp): a backup there would be deleted by the next run
    (found by an operator's trial of issue 17)."""
    path, env = data
    before = path.read_bytes()
    result = script("database_update.py", "--backup", str(tmp_path / name), env=env)
    assert result.returncode == 2 and "give another name" in last_line(result)
    assert path.read_bytes() == before
    assert name == "db.bson" or not (tmp_path / name).exists()


def test_the_data_file_is_not_restored_onto_itself(data, script):
    path, env = data
    before = path.read_bytes()
    result = script("database_update.py", "--restore", str(path), "--yes", env=env)
    assert result.returncode == 2
    assert last_line(result).endswith(f"backup {path} is the data file itself; nothing was restored: give the "
                                      f"backup's name")
    assert path.read_bytes() == before and not list(path.parent.glob("db.bson.replaced-*"))
