"""The embedded default database: exact round trip, atomic save, lock, unreadable files."""

import threading
from datetime import datetime

import mongomock
import pytest
from bson import Decimal128, Int64, ObjectId
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embedded import mongomock_compat
from embedded.data_file import EmbeddedDatabaseFile, load_database, save_database
from tests.support import PROJECT_ROOT, FakeStream, fresh_db
from utils.config import DatabaseSettings
from utils.connectDB import database_session, get_collection, get_db_connection
from utils.Custom_Exceptions import DatabaseConnectionError


def settings_for(path, lock_timeout=5):
    return DatabaseSettings(uri=f"embedded://{path}", db_name="drs", lock_timeout_seconds=lock_timeout)


def test_round_trip_keeps_types_collections_and_indexes(tmp_path):
    path = tmp_path / "db.bson"
    source = mongomock.MongoClient()["drs"]
    document = {"_id": ObjectId(), "when": datetime(2026, 1, 2, 3, 4, 5, 6000), "big": Int64(2**40),
                "money": Decimal128("10.25"), "nested": {"list": [1, "a", None]}, "none": None}
    source["DRS.Tmp_Case_Distribution_DRC"].insert_one(document)
    source["DRS.Tmp_Case_Distribution_DRC"].create_index([("a", 1), ("b", -1)], name="ab", unique=True)
    source.create_collection("empty")
    save_database(source, path)

    target = mongomock.MongoClient()["drs"]
    load_database(target, path)
    assert target["DRS.Tmp_Case_Distribution_DRC"].find_one() == document
    assert sorted(target.list_collection_names()) == ["DRS.Tmp_Case_Distribution_DRC", "empty"]
    info = target["DRS.Tmp_Case_Distribution_DRC"].index_information()["ab"]
    assert info["key"] == [("a", 1), ("b", -1)] and info["unique"] is True


def test_session_saves_on_success_only(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "db.bson"
    with database_session(settings_for(path), create=True) as db:
        db["t"].insert_one({"x": 1})
        assert get_db_connection() is db and get_collection("t").count_documents({}) == 1
    with pytest.raises(RuntimeError):
        with database_session(settings_for(path)) as db:
            db["t"].insert_one({"x": 2})
            raise RuntimeError("crash")
    with database_session(settings_for(path)) as db:
        assert [d["x"] for d in db["t"].find()] == [1]
    with pytest.raises(DatabaseConnectionError, match="no database session is open"):
        get_db_connection()


def test_a_failed_save_leaves_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "db.bson"
    with database_session(settings_for(path), create=True) as db:
        db["t"].insert_one({"x": 1})
    before = path.read_bytes()

    def fail_replace(*_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("embedded.data_file.os.replace", fail_replace)
    with pytest.raises(DatabaseConnectionError, match="cannot be written: No space left on device"):
        with database_session(settings_for(path)) as db:
            db["t"].insert_one({"x": 2})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []


@pytest.mark.parametrize("content, message", [
    (b"not bson at all", "cannot be read"),
    (b"", "is not a DRS Amend data file"),
])
def test_an_unreadable_file_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "db.bson"
    path.write_bytes(content)
    with pytest.raises(DatabaseConnectionError, match=message):
        with database_session(settings_for(path)):
            pass
    assert path.read_bytes() == content


def test_a_second_process_waits_for_the_lock(tmp_path):
    path = tmp_path / "db.bson"
    holder = EmbeddedDatabaseFile(path, "drs", lock_timeout_seconds=5, create=True)
    holder.__enter__()
    try:
        with pytest.raises(DatabaseConnectionError, match="stayed locked by another process"):
            with database_session(settings_for(path, lock_timeout=0), create=True):
                pass
    finally:
        holder.__exit__(None, None, None)


def test_concurrent_sessions_never_lose_an_update(tmp_path):
    path = tmp_path / "db.bson"
    with database_session(settings_for(path), create=True) as db:
        db["counter"].insert_one({"_id": 1, "n": 0})

    def increment():
        for _ in range(5):
            session = EmbeddedDatabaseFile(path, "drs", lock_timeout_seconds=30)
            db = session.__enter__()
            db["counter"].update_one({"_id": 1}, {"$inc": {"n": 1}})
            session.__exit__(None, None, None)

    threads = [threading.Thread(target=increment) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with database_session(settings_for(path)) as db:
        assert db["counter"].find_one()["n"] == 20


# --- integrity of the data file (issue 8, item 4) -----------------------------------------

def saved_fixture_file(tmp_path):
    path = tmp_path / "db.bson"
    save_database(fresh_db(), path)
    return path


def record_boundaries(data):
    offsets, offset = [], 0
    while offset < len(data):
        offsets.append(offset)
        offset += int.from_bytes(data[offset:offset + 4], "little")
    return offsets


def assert_refused_and_unchanged(path, message="damaged|not a DRS Amend data file"):
    content = path.read_bytes()
    with pytest.raises(DatabaseConnectionError, match=message):
        with database_session(settings_for(path)):
            pass
    assert path.read_bytes() == content


def test_a_file_truncated_at_any_record_boundary_is_refused(tmp_path):
    path = saved_fixture_file(tmp_path)
    data = path.read_bytes()
    boundaries = record_boundaries(data)
    assert len(boundaries) > 80  # header, 7 collections, their documents, the trailer
    for offset in boundaries[1:]:
        path.write_bytes(data[:offset])
        assert_refused_and_unchanged(path)


def test_a_file_truncated_anywhere_is_refused(tmp_path):
    path = saved_fixture_file(tmp_path)
    data = path.read_bytes()
    for length in list(range(0, 64)) + list(range(64, len(data), 97)) + [len(data) - 1]:
        path.write_bytes(data[:length])
        if length == 0:
            assert_refused_and_unchanged(path, "not a DRS Amend data file")
        else:
            assert_refused_and_unchanged(path)


def test_every_single_bit_flip_is_refused(tmp_path):
    import random

    path = saved_fixture_file(tmp_path)
    data = path.read_bytes()
    from embedded.data_file import TRAILER_SIZE

    edges = list(range(0, 64 * 8)) + list(range((len(data) - TRAILER_SIZE) * 8, len(data) * 8))
    bits = edges + random.Random(8).sample(range(64 * 8, (len(data) - TRAILER_SIZE) * 8), 600)
    for bit in bits:
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        path.write_bytes(bytes(flipped))
        with pytest.raises(DatabaseConnectionError):
            load_database(mongomock.MongoClient()["drs"], path)


def test_a_damaged_file_stops_every_script_with_one_line_and_is_never_overwritten(tmp_path, script):
    path = saved_fixture_file(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:record_boundaries(data)[47]])
    damaged = path.read_bytes()
    env = {"DRS_MONGO_URI": f"embedded://{path}"}
    for name, args, code in (("main.py", ["--log-dir", str(tmp_path / "logs")], 2),
                             ("batch_monitor.py", ["check"], 3),
                             ("batch_monitor.py", ["status"], 2),
                             ("database_update.py", [], 2)):
        result = script(name, *args, env=env)
        assert result.returncode == code, (name, result.stderr)
        output = (result.stdout + result.stderr).strip()
        assert len(output.splitlines()) == 1 and "is damaged" in output and "Traceback" not in output, output
        assert path.read_bytes() == damaged


def test_a_temporary_file_of_a_killed_save_is_removed(tmp_path):
    path = saved_fixture_file(tmp_path)
    leftover = tmp_path / "db.bson.k1ll3d9x.tmp"
    leftover.write_bytes(path.read_bytes()[:100])
    unrelated = tmp_path / "other.bson.abc.tmp"
    unrelated.write_bytes(b"x")
    with database_session(settings_for(path)):
        pass
    assert not leftover.exists() and unrelated.exists()


def test_a_symlinked_data_file_stays_a_symlink(tmp_path):
    real = saved_fixture_file(tmp_path)
    link = tmp_path / "link.bson"
    link.symlink_to(real)
    with database_session(settings_for(link)) as db:
        db["t"].insert_one({"x": 1})
    assert link.is_symlink() and link.resolve() == real.resolve()
    with database_session(settings_for(real)) as db:
        assert db["t"].count_documents({}) == 1


def test_the_permissions_of_the_data_file_are_kept(tmp_path):
    path = saved_fixture_file(tmp_path)
    path.chmod(0o640)
    with database_session(settings_for(path)) as db:
        db["t"].insert_one({"x": 1})
    assert path.stat().st_mode & 0o777 == 0o640


def test_a_file_of_the_first_release_is_loaded_and_saved_with_a_trailer(tmp_path):
    import bson

    from embedded.data_file import FILE_FORMAT

    path = tmp_path / "db.bson"
    path.write_bytes(b"".join(bson.encode(record) for record in (
        {"format": FILE_FORMAT, "version": 1}, {"collection": "t", "indexes": []}, {"d": {"_id": 1, "x": 1}})))
    with database_session(settings_for(path)) as db:
        assert db["t"].find_one() == {"_id": 1, "x": 1}
    path.write_bytes(path.read_bytes()[:-10])
    assert_refused_and_unchanged(path)


# --- read-only commands (issue 10) ----------------------------------------------------------------

SHIPPED_CONFIG = PROJECT_ROOT / "config"
READ_ONLY_COMMANDS = [("batch_monitor.py", ["check"]), ("batch_monitor.py", ["status"]),
                      ("batch_monitor.py", ["logs", "--export", "json"]), ("main.py", ["--dry-run"]),
                      ("batch_monitor.py", ["audit"])]


@pytest.mark.parametrize("name, args", READ_ONLY_COMMANDS,
                         ids=[" ".join([name, *args]) for name, args in READ_ONLY_COMMANDS])
def test_a_read_only_command_answers_while_a_run_holds_the_lock_and_changes_nothing(tmp_path, script, name, args):
    import os
    import subprocess
    import sys
    import time

    path = saved_fixture_file(tmp_path)
    os.utime(path, (1_000_000_000, 1_000_000_000))
    before = path.read_bytes()
    hold_the_lock = (f"import filelock, time\nwith filelock.FileLock({str(path) + '.lock'!r}):\n"
                     "    print('held', flush=True)\n    time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", hold_the_lock], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        result = script(name, *args, "--log-dir" if name == "main.py" else "--config-dir",
                        str(tmp_path / "logs") if name == "main.py" else str(SHIPPED_CONFIG),
                        env={"DRS_MONGO_URI": f"embedded://{path}"})
        assert time.monotonic() - started < 10
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert result.returncode in (0, 1, 2) and "locked" not in result.stdout + result.stderr, result
    assert path.read_bytes() == before and path.stat().st_mtime == 1_000_000_000
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("db.bson")) == ["db.bson", "db.bson.lock"]


def test_check_is_unknown_when_the_file_cannot_be_read(tmp_path, script):
    path = tmp_path / "db.bson"
    path.write_bytes(b"garbage")
    result = script("batch_monitor.py", "check", env={"DRS_MONGO_URI": f"embedded://{path}"})
    assert result.returncode == 3 and result.stdout.startswith("DRS-AMEND UNKNOWN - ")
    assert path.read_bytes() == b"garbage"


def test_the_run_record_is_written_last_while_the_file_is_saved(tmp_path):
    import bson

    database = mongomock.MongoClient()["drs"]
    database["a"].insert_one({"x": 1})
    database["z"].insert_one({"x": 2})
    seen = []

    def final_write(db):
        seen.append(sorted(db.list_collection_names()))
        db["history"].insert_one({"run": 1})

    save_database(database, tmp_path / "db.bson", ("history", final_write))
    records = bson.decode_all((tmp_path / "db.bson").read_bytes()[:-109])
    names = [record["collection"] for record in records if "collection" in record]
    assert names == ["a", "z", "history"] and records[-1] == {"d": {"_id": records[-1]["d"]["_id"], "run": 1}}
    assert seen == [["a", "z"]]


@pytest.mark.parametrize("terminal", [False, True])
def test_loading_and_saving_show_a_progress_bar_with_a_total_on_a_terminal(tmp_path, monkeypatch, terminal):
    import embedded.data_file

    monkeypatch.setattr(embedded.data_file, "LOAD_CHUNK", 3)  # several pieces, and a last one shorter
    stream = FakeStream(terminal)
    monkeypatch.setattr("sys.stderr", stream)
    source = mongomock.MongoClient()["drs"]
    source["cases"].insert_many([{"_id": number, "n": number} for number in range(10)])
    source["tasks"].insert_one({"_id": 1})
    save_database(source, tmp_path / "db.bson")
    target = mongomock.MongoClient()["drs"]
    load_database(target, tmp_path / "db.bson")
    assert list(target["cases"].find()) == list(source["cases"].find())
    assert list(target["tasks"].find()) == [{"_id": 1}]
    # 14 records: the file's header, two collection headers, 11 documents
    assert ("saving db.bson" in stream.text and "loading db.bson" in stream.text) is terminal
    assert ("/14" in stream.text) is terminal


# --- a save writes the documents no write changed as they were loaded -----------------------------------


def saved_with_and_without_the_loaded_bytes(tmp_path, operations):
    """The file a save writes after `operations` on the loaded fixture: taking the unchanged documents' records
    from the loaded file, then encoding every document (without the speedups, which note the changes)."""
    from tests.test_mongomock_compat import answer, speedups

    source = tmp_path / "source.bson"
    if not source.exists():
        save_database(fresh_db(), source)
    with speedups(True):
        database = mongomock.MongoClient()["drs"]
        load_database(database, source)
        for operation in operations:
            answer(lambda operation=operation: operation(database))
        save_database(database, tmp_path / "as loaded.bson")
    with speedups(False):
        save_database(database, tmp_path / "encoded.bson")
    return (tmp_path / "as loaded.bson").read_bytes(), (tmp_path / "encoded.bson").read_bytes()


CASES = "DRS.Tmp_Case_Distribution_DRC"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_save_after_any_writes_is_the_file_a_save_encoding_every_document_writes(tmp_path, data):
    from tests.test_mongomock_compat import random_operation

    writes = [random_operation(data) for _ in range(data.draw(st.integers(0, 6)))]
    operations = [lambda database, write=write: write(database[CASES]) for write in writes]
    as_loaded, encoded = saved_with_and_without_the_loaded_bytes(tmp_path, operations)
    assert as_loaded == encoded


# Each kind of write, and whether it changes a loaded document in place (the others replace or remove it).
WRITES = {
    "update": (lambda db: db[CASES].update_many({}, {"$set": {"NEW_DRC_ID": "D99"}}), True),
    "pipeline update": (lambda db: db[CASES].update_one({}, [{"$set": {"Arrease": 1}}]), True),
    "replace": (lambda db: db[CASES].replace_one({}, {"Case_Id": -1}), True),
    "find_one_and_update": (lambda db: db[CASES].find_one_and_update({}, {"$unset": {"RTOM": ""}}), True),
    "delete": (lambda db: db[CASES].delete_one({}), False),
    "insert": (lambda db: db[CASES].insert_one({"_id": 1, "new": True}), False),
    "drop": (lambda db: (db[CASES].drop(), db[CASES].insert_one({"_id": 1})), False),
    "fill": (lambda db: mongomock_compat.store_documents(db[CASES], [{"_id": 2, "filled": True}]), False),
}


@pytest.mark.parametrize("write", WRITES)
def test_each_kind_of_write_is_saved_and_a_change_in_place_would_be_lost_unnoted(tmp_path, monkeypatch, write):
    write_once, in_place = WRITES[write]
    as_loaded, encoded = saved_with_and_without_the_loaded_bytes(tmp_path, [write_once])
    assert as_loaded == encoded
    monkeypatch.setattr(mongomock_compat, "_note_changed", lambda store, document: None)
    unnoted, encoded = saved_with_and_without_the_loaded_bytes(tmp_path, [write_once])
    assert (unnoted != encoded) is in_place  # this test sees a change the save would miss


def test_an_unchanged_database_is_saved_from_the_loaded_bytes_without_encoding_a_document(tmp_path, monkeypatch):
    import bson

    import embedded.data_file
    from tests.test_mongomock_compat import speedups

    path = saved_fixture_file(tmp_path)
    encoded, encode = [], bson.encode
    with speedups(True):
        database = mongomock.MongoClient()["drs"]
        load_database(database, path)
        monkeypatch.setattr(embedded.data_file.bson, "encode", lambda record: encoded.append(record) or encode(record))
        save_database(database, tmp_path / "again.bson")
    assert (tmp_path / "again.bson").read_bytes() == path.read_bytes()
    assert encoded and all("d" not in record for record in encoded)  # the file's and collections' headers only


# --- mongomock is adapted when the embedded default opens -------------------------------------------


def test_the_embedded_default_patches_mongomock_each_time_it_opens(tmp_path, monkeypatch):
    from embedded import data_file

    calls = []
    monkeypatch.setattr(data_file, "patch_mongomock", lambda: calls.append("patched") or True)
    for read_only in (False, True, False):
        with EmbeddedDatabaseFile(tmp_path / "db.bson", "drs", 5, read_only=read_only, create=True) as database:
            assert calls == ["patched"]
            database["c"].insert_one({"x": 1})
        calls.clear()


def test_importing_the_embedded_engine_patches_nothing():
    """Only opening the embedded default patches mongomock (on the proven version): importing it does not."""
    import subprocess
    import sys

    probe = ("from mongomock import filtering\n"
             "from mongomock.collection import BulkOperationBuilder as B, Collection as C, Cursor\n"
             "from mongomock.store import CollectionStore as S\n"
             "def state():\n"
             "    return (B.add_update, B.add_replace, Cursor.__next__, Cursor.next, filtering._in_op,\n"
             "            filtering._filterer_inst._operator_map['$in'], C._iter_documents, C._copy_only_fields,\n"
             "            C._get_dataset, C._update, C._apply_update_document, C._apply_update_pipeline,\n"
             "            S.__setitem__, S.__delitem__, S.drop)\n"
             "before = state()\n"
             "import embedded.data_file, embedded.mongomock_compat, utils.connectDB\n"
             "print(state() == before)\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=60)
    assert result.stdout.strip() == "True", result.stderr
