"""What `batch_monitor.py report --html FILE` and `logs --out FILE` may write (issue 15, item 6): a new file
or the tool's own earlier output, through a temporary file and a rename; never the embedded database, its
lock or a save's temporary file (by path, symlink, `..` or hard link), a folder, a FIFO, or anyone's file."""

import os
import shutil

import pytest

from ops.monitoring import GROUP_COLUMNS, LOG_COLUMNS, export, export_groups
from ops.output_files import DASHBOARD_MARKER, is_own_output, output_destination
from tests.support import one_line
from utils.Custom_Exceptions import ConfigurationError

COMMANDS = {"report": ["report", "--html"], "logs": ["logs", "--export", "csv", "--out"]}


@pytest.fixture
def data(tmp_path, saved_fixtures):
    """A copy of the fixtures' data file, its lock beside it (as a run leaves it), and the scripts' environment."""
    path = tmp_path / "db.bson"
    shutil.copy(saved_fixtures, path)
    (tmp_path / "db.bson.lock").touch()
    return path, {"DRS_MONGO_URI": f"embedded://{path}"}


def fingerprint(path):
    status = os.lstat(path)
    content = path.read_bytes() if path.is_file() and not path.is_symlink() else None
    return status.st_ino, status.st_mode, content


# (name, builds the destination in tmp_path and returns it as given on the command line, text of the refusal)
def the_data_file(tmp_path):
    return str(tmp_path / "db.bson")


def a_symlink_to_the_data_file(tmp_path):
    (tmp_path / "link.html").symlink_to(tmp_path / "db.bson")
    return str(tmp_path / "link.html")


def a_path_through_dot_dot(tmp_path):
    (tmp_path / "sub").mkdir()
    return str(tmp_path / "sub" / ".." / "db.bson")


def a_hard_link_to_the_data_file(tmp_path):
    os.link(tmp_path / "db.bson", tmp_path / "copy.csv")
    return str(tmp_path / "copy.csv")


def the_lock_file(tmp_path):
    return str(tmp_path / "db.bson.lock")


def a_hard_link_to_the_lock_file(tmp_path):
    os.link(tmp_path / "db.bson.lock", tmp_path / "lock.csv")
    return str(tmp_path / "lock.csv")


def a_temporary_file_name_of_a_save(tmp_path):
    return str(tmp_path / "db.bson.k1ll3d9x.tmp")


def a_folder(tmp_path):
    return str(tmp_path)


def a_fifo(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    return str(tmp_path / "pipe")


def someone_elses_file(tmp_path):
    (tmp_path / "notes.txt").write_text("my notes, not a report\n")
    return str(tmp_path / "notes.txt")


REFUSED = [
    (the_data_file, "is the embedded database file"),
    (a_symlink_to_the_data_file, "is the embedded database file"),
    (a_path_through_dot_dot, "is the embedded database file"),
    (a_hard_link_to_the_data_file, "is the embedded database file"),
    (the_lock_file, "the names db.bson.* beside the embedded database file are the job's"),
    (a_hard_link_to_the_lock_file, "is a hard link to"),
    (a_temporary_file_name_of_a_save, "the names db.bson.* beside the embedded database file are the job's"),
    (a_folder, "is a folder; give the name of a file"),
    (a_fifo, "is not a regular file (a device, FIFO or socket)"),
    (someone_elses_file, "exists and is not an earlier output of batch_monitor"),
]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("destination, refusal", REFUSED, ids=[build.__name__ for build, _ in REFUSED])
def test_a_destination_that_is_not_a_new_file_or_own_output_is_refused(data, tmp_path, script, command,
                                                                      destination, refusal, monkeypatch):
    path, env = data
    monkeypatch.chdir(tmp_path)  # an empty name is the current folder
    given = destination(tmp_path)
    before = {entry.name: fingerprint(entry) for entry in tmp_path.rglob("*")}
    result = script("batch_monitor.py", *COMMANDS[command], given, env=env)
    assert result.returncode == 2, result
    line = one_line(result.stderr)
    assert line.startswith(f"batch_monitor: {COMMANDS[command][-1]} ") and refusal in line, line
    assert "Device or resource busy" not in line
    assert {entry.name: fingerprint(entry) for entry in tmp_path.rglob("*")} == before


@pytest.mark.parametrize("command", COMMANDS)
def test_a_new_file_and_the_tools_own_earlier_output_are_written(data, tmp_path, script, command):
    path, env = data
    target = tmp_path / "out" / "result"
    target.parent.mkdir()
    for _ in range(2):  # the second time over the first one's output
        result = script("batch_monitor.py", *COMMANDS[command], str(target), env=env)
        assert result.returncode == 0, result
    assert is_own_output(target.read_text())
    assert target.stat().st_mode & 0o777 == 0o644
    assert [entry.name for entry in target.parent.iterdir()] == ["result"]  # no temporary file left


def test_every_export_may_replace_any_other_and_an_empty_file_may_be_filled(data, tmp_path, script):
    path, env = data
    target = tmp_path / "history"
    target.touch()
    for args in (["--export", "csv"], ["--export", "json"], ["--export", "txt"], ["--group-by", "reason"],
                 ["--group-by", "reason", "--export", "json"], ["--group-by", "reason", "--export", "csv"],
                 ["--since", "2999-01-01", "--export", "json"]):
        result = script("batch_monitor.py", "logs", *args, "--out", str(target), env=env)
        assert result.returncode == 0, (args, result)
    assert script("batch_monitor.py", "report", "--html", str(target), env=env).returncode == 0
    assert script("batch_monitor.py", "logs", "--out", str(target), env=env).returncode == 0


def test_a_symlinked_destination_stays_a_link_and_its_target_is_written(data, tmp_path, script):
    path, env = data
    (tmp_path / "site").mkdir()
    (tmp_path / "dashboard.html").symlink_to(tmp_path / "site" / "page.html")
    result = script("batch_monitor.py", "report", "--html", str(tmp_path / "dashboard.html"), env=env)
    assert result.returncode == 0, result
    assert (tmp_path / "dashboard.html").is_symlink()
    assert DASHBOARD_MARKER in (tmp_path / "site" / "page.html").read_text()


def test_a_failed_write_of_an_export_leaves_the_previous_one(data, tmp_path, script, monkeypatch):
    path, env = data
    target = tmp_path / "history.csv"
    assert script("batch_monitor.py", "logs", "--export", "csv", "--out", str(target), env=env).returncode == 0
    before = target.read_bytes()

    def disk_full(*_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("ops.output_files.os.replace", disk_full)
    result = script("batch_monitor.py", "logs", "--export", "json", "--out", str(target), env=env)
    assert result.returncode == 2 and "cannot write" in one_line(result.stderr)
    assert target.read_bytes() == before
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["db.bson", "db.bson.lock", "history.csv"]


ROWS = [{column: "x" for column in LOG_COLUMNS}]


@pytest.mark.parametrize("form", ["csv", "json", "txt"])
def test_every_export_is_recognised_as_own_output(form):
    for text in (export(ROWS, form), export([], form), export_groups([], form)):
        assert is_own_output(text), text
    grouped = export([{column: "y" for column in GROUP_COLUMNS}], form, GROUP_COLUMNS)
    assert is_own_output(grouped)


@pytest.mark.parametrize("text", ["hello", "run_id,host\n", "[1, 2]", '{"run_id": 1}', "<html><head></head></html>",
                                  "[MONITOR]\nX = 1\n"])
def test_other_content_is_not_own_output(text):
    assert not is_own_output(text)


@pytest.mark.parametrize("form", ["csv", "json", "txt"])
def test_an_export_someone_wrote_notes_into_is_no_longer_own_output(form):
    text = export(ROWS, form)
    edited = {"csv": text + "precious notes, kept here\n", "txt": text + "precious notes, kept here, by hand\n",
              "json": text.replace('"x"', '"x", "note": "precious"', 1)}[form]
    assert not is_own_output(edited)


def test_a_replaced_output_keeps_its_permissions(data, tmp_path, script):
    path, env = data
    target = tmp_path / "private.csv"
    assert script("batch_monitor.py", "logs", "--export", "csv", "--out", str(target), env=env).returncode == 0
    target.chmod(0o600)
    assert script("batch_monitor.py", "logs", "--export", "csv", "--out", str(target), env=env).returncode == 0
    assert target.stat().st_mode & 0o777 == 0o600


def test_on_a_server_configuration_only_the_destinations_own_checks_apply(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigurationError, match="--out .*notes.txt exists and is not an earlier output"):
        output_destination("--out", tmp_path / "notes.txt", None)
    assert output_destination("--out", tmp_path / "new.csv", None) == tmp_path / "new.csv"
