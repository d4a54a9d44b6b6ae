"""The embedded default database: mongomock in process, its content persisted in one file.

The file is a sequence of BSON documents: a header, then per collection one record with
its name and indexes followed by one record per document. BSON keeps every type
(ObjectId, datetime, Int64, Decimal128) exactly. The file is loaded under a lock that is
held until the script ends, and saved through a temporary file and a rename, so a reader
never sees half a file and two processes never interleave their load and save.
"""

import os
import tempfile
from pathlib import Path

import bson
import filelock
import mongomock
from bson.errors import BSONError

from utils.Custom_Exceptions import DatabaseConnectionError

FILE_FORMAT = "drs-amend-embedded"
FILE_VERSION = 1


def _index_specs(collection):
    specs = []
    for name, info in collection.index_information().items():
        if name == "_id_":
            continue
        specs.append({"name": name, "key": [list(pair) for pair in info["key"]],
                      "unique": bool(info.get("unique", False))})
    return specs


def save_database(database, path):
    """Write every collection of `database` to `path` atomically (temporary file, then rename)."""
    path = Path(path)
    handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.name + ".", suffix=".tmp", delete=False)
    try:
        with handle:
            handle.write(bson.encode({"format": FILE_FORMAT, "version": FILE_VERSION}))
            for name in sorted(database.list_collection_names()):
                collection = database[name]
                handle.write(bson.encode({"collection": name, "indexes": _index_specs(collection)}))
                for document in collection.find():
                    handle.write(bson.encode({"d": document}))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def load_database(database, path):
    """Fill `database` from `path`; a missing file is an empty database."""
    path = Path(path)
    if not path.exists():
        return
    try:
        with path.open("rb") as handle:
            records = bson.decode_file_iter(handle)
            header = next(records, None)
            if not header or header.get("format") != FILE_FORMAT or header.get("version") != FILE_VERSION:
                raise DatabaseConnectionError(
                    f"embedded database file {path} is not a DRS Amend data file of version {FILE_VERSION}")
            collection, batch = None, []
            for record in records:
                if "collection" in record:
                    _flush(collection, batch)
                    collection, batch = database[record["collection"]], []
                    database.create_collection(record["collection"])
                    for spec in record["indexes"]:
                        collection.create_index([tuple(pair) for pair in spec["key"]],
                                                name=spec["name"], unique=spec["unique"])
                elif "d" in record and collection is not None:
                    batch.append(record["d"])
                else:
                    raise DatabaseConnectionError(f"embedded database file {path} has a record of unknown shape")
            _flush(collection, batch)
    except (OSError, BSONError) as exc:
        raise DatabaseConnectionError(f"embedded database file {path} cannot be read: {exc}") from exc


def _flush(collection, documents):
    if collection is not None and documents:
        collection.insert_many(documents)


class EmbeddedDatabaseFile:
    """Context manager: lock, load, yield the database, save when the block ends without an exception.

    An exception (or a killed process) leaves the file as it was: the run's writes are lost
    together, never half of them.
    """

    def __init__(self, path, db_name, lock_timeout_seconds):
        self.path = Path(path)
        self.db_name = db_name
        self.lock_timeout_seconds = lock_timeout_seconds
        self._lock = None

    def __enter__(self):
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatabaseConnectionError(
                f"folder of embedded database file {self.path} cannot be created: {exc.strerror}") from exc
        self._lock = filelock.FileLock(f"{self.path}.lock", timeout=self.lock_timeout_seconds)
        try:
            self._lock.acquire()
        except filelock.Timeout:
            raise DatabaseConnectionError(
                f"embedded database file {self.path} stayed locked by another process for "
                f"{self.lock_timeout_seconds} s (LOCK_TIMEOUT_SECONDS)") from None
        except OSError as exc:
            raise DatabaseConnectionError(f"cannot lock embedded database file {self.path}: {exc.strerror}") from exc
        try:
            database = mongomock.MongoClient()[self.db_name]
            load_database(database, self.path)
        except BaseException:
            self._lock.release()
            raise
        self._database = database
        return database

    def __exit__(self, exc_type, exc, traceback):
        try:
            if exc_type is None:
                try:
                    save_database(self._database, self.path)
                except OSError as err:
                    raise DatabaseConnectionError(
                        f"embedded database file {self.path} cannot be written: {err.strerror}") from err
        finally:
            self._lock.release()
        return False
