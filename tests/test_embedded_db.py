"""The embedded default database: exact round trip, atomic save, lock, unreadable files."""

import threading
from datetime import datetime

import mongomock
import pytest
from bson import Decimal128, Int64, ObjectId

from utils.config import DatabaseSettings
from utils.connectDB import database_session, get_collection, get_db_connection
from utils.Custom_Exceptions import DatabaseConnectionError
from utils.embedded_db import EmbeddedDatabaseFile, load_database, save_database


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
    path = tmp_path / "sub" / "db.bson"
    with database_session(settings_for(path)) as db:
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
    with database_session(settings_for(path)) as db:
        db["t"].insert_one({"x": 1})
    before = path.read_bytes()

    def fail_replace(*_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("utils.embedded_db.os.replace", fail_replace)
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
    holder = EmbeddedDatabaseFile(path, "drs", lock_timeout_seconds=5)
    holder.__enter__()
    try:
        with pytest.raises(DatabaseConnectionError, match="stayed locked by another process"):
            with database_session(settings_for(path, lock_timeout=0)):
                pass
    finally:
        holder.__exit__(None, None, None)


def test_concurrent_sessions_never_lose_an_update(tmp_path):
    path = tmp_path / "db.bson"
    with database_session(settings_for(path)) as db:
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
