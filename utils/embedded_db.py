"""The embedded default database: mongomock in process, its content persisted in one file.

The file is a sequence of BSON documents: a header, then per collection one record with
its name and indexes followed by one record per document, then a trailer of fixed size
holding the number of records before it and the SHA-256 of their bytes. BSON keeps every
type (ObjectId, datetime, Int64, Decimal128) exactly; the trailer makes any truncation or
flipped bit a refusal to load, never a smaller database. The file is loaded under a lock
that is held until the script ends, and saved through a temporary file and a rename, so a
reader never sees half a file and two processes never interleave their load and save.
"""

import hashlib
import logging
import os
import stat
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

import bson
import filelock
import mongomock
from bson.errors import BSONError
from bson.int64 import Int64
from pymongo.errors import PyMongoError

from utils.Custom_Exceptions import DatabaseConnectionError
from utils.mongomock_compat import patch_mongomock

FILE_FORMAT = "drs-amend-embedded"
FILE_VERSION = 2
# Version 1 (the first release) had no trailer: still loaded, and rewritten as version 2 by the next save.
LEGACY_VERSION = 1
TEMPORARY_SUFFIX = ".tmp"

log = logging.getLogger("drs_amend.embedded")
patch_mongomock()


def _trailer(records: int, digest: str) -> bytes:
    return bson.encode({"end": {"records": Int64(records), "sha256": digest}})


TRAILER_SIZE = len(_trailer(0, "0" * 64))


class DamagedFileError(DatabaseConnectionError):
    """The embedded data file is not intact; it is never written over."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"embedded database file {path} is damaged ({reason}); it was left unchanged: restore it "
                         f"from a backup, or move it aside and run database_update.py to start afresh")


def _index_specs(collection: Any) -> list[dict[str, Any]]:
    specs = []
    for name, info in collection.index_information().items():
        if name == "_id_":
            continue
        specs.append({"name": name, "key": [list(pair) for pair in info["key"]],
                      "unique": bool(info.get("unique", False))})
    return specs


def data_file(path: Path | str) -> Path:
    """The file a configured path names: a symlink is followed, so that saving replaces its target
    and the link stays a link."""
    return Path(os.path.realpath(path))


def remove_stale_temporary_files(target: Path) -> None:
    """Temporary files of saves that were killed (kill -9) before their rename; only a lock holder calls this."""
    prefix = target.name + "."
    for candidate in target.parent.iterdir():
        if candidate.name.startswith(prefix) and candidate.name.endswith(TEMPORARY_SUFFIX):
            log.warning("removing %s, left by a save that was interrupted", candidate)
            try:
                candidate.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("%s cannot be removed (%s); remove it by hand", candidate, exc.strerror)


def _mode_and_owner(target: Path) -> tuple[int, tuple[int, int] | None]:
    """The permissions and owner the saved file keeps: the current file's, or those of a new file."""
    try:
        status = target.stat()
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask, None
    return stat.S_IMODE(status.st_mode), (status.st_uid, status.st_gid)


def save_database(database: Any, path: Path | str) -> None:
    """Write every collection of `database` to `path` atomically (temporary file, then rename), keeping
    the file's permissions and owner, and a symlink pointing to it."""
    target = data_file(path)
    mode, owner = _mode_and_owner(target)
    handle = tempfile.NamedTemporaryFile(dir=target.parent, prefix=target.name + ".", suffix=TEMPORARY_SUFFIX,
                                         delete=False)
    try:
        with handle:
            digest = hashlib.sha256()
            records = 0

            def write(record: dict[str, Any]) -> None:
                nonlocal records
                encoded = bson.encode(record)
                digest.update(encoded)
                handle.write(encoded)
                records += 1

            write({"format": FILE_FORMAT, "version": FILE_VERSION})
            for name in sorted(database.list_collection_names()):
                collection = database[name]
                write({"collection": name, "indexes": _index_specs(collection)})
                for document in collection.find():
                    write({"d": document})
            handle.write(_trailer(records, digest.hexdigest()))
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            if owner is not None and owner != (os.getuid(), os.getgid()):
                try:
                    os.fchown(handle.fileno(), *owner)
                except PermissionError:
                    log.warning("%s now belongs to the user running this script: only root may keep its owner",
                                target)
            os.fsync(handle.fileno())
        os.replace(handle.name, target)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def _verified_records(data: bytes, path: Path) -> list[dict[str, Any]]:
    """The records of a version 2 file, after checking the trailer's count and checksum."""
    if len(data) < TRAILER_SIZE:
        raise DamagedFileError(path, "it ends before its integrity trailer")
    body, trailer = data[:-TRAILER_SIZE], data[-TRAILER_SIZE:]
    try:
        end = bson.decode(trailer)["end"]
        expected_records, expected_digest = end["records"], end["sha256"]
    except (BSONError, KeyError, TypeError, AttributeError):
        raise DamagedFileError(path, "its integrity trailer is missing or unreadable: the file is truncated or "
                                     "was changed") from None
    if hashlib.sha256(body).hexdigest() != expected_digest:
        raise DamagedFileError(path, "its checksum does not match its content")
    records = bson.decode_all(body)
    if len(records) != expected_records:
        raise DamagedFileError(path, f"it holds {len(records)} records where its trailer says {expected_records}")
    return records


def _read_records(path: Path) -> list[dict[str, Any]]:
    data = path.read_bytes()
    try:
        length = int.from_bytes(data[:4], "little")
        header = bson.decode(data[:length]) if len(data) >= 5 else None
    except BSONError:
        header = None
    if not header or header.get("format") != FILE_FORMAT:
        raise DatabaseConnectionError(
            f"embedded database file {path} cannot be read: it is not a DRS Amend data file; it was left unchanged")
    if header.get("version") == FILE_VERSION:
        return _verified_records(data, path)
    if header.get("version") == LEGACY_VERSION:
        log.warning("%s has the first release's format, without integrity check; the next save adds one", path)
        return bson.decode_all(data)
    raise DamagedFileError(path, f"its format version is {header.get('version')!r}; this release reads "
                                 f"{LEGACY_VERSION} and {FILE_VERSION}")


def load_database(database: Any, path: Path | str) -> None:
    """Fill `database` from `path`; a missing file is an empty database, a damaged one a DamagedFileError."""
    path = data_file(path)
    if not path.exists():
        return
    try:
        records = _read_records(path)
    except OSError as exc:
        raise DatabaseConnectionError(f"embedded database file {path} cannot be read: {exc.strerror}") from exc
    except BSONError as exc:
        raise DamagedFileError(path, f"a record cannot be decoded: {exc}") from exc
    try:
        _fill(database, records[1:], path)
    except (KeyError, TypeError, ValueError, PyMongoError) as exc:
        raise DamagedFileError(path, f"a record does not have the shape of this format: {exc}") from exc


def _fill(database: Any, records: list[dict[str, Any]], path: Path) -> None:
    collection: Any = None
    batch: list[dict[str, Any]] = []
    for record in records:
        if "collection" in record:
            _flush(collection, batch)
            collection, batch = database[record["collection"]], []
            database.create_collection(record["collection"])
            for spec in record["indexes"]:
                collection.create_index([tuple(pair) for pair in spec["key"]], name=spec["name"],
                                        unique=spec["unique"])
        elif "d" in record and collection is not None:
            batch.append(record["d"])
        else:
            raise DamagedFileError(path, "it has a record of unknown shape")
    _flush(collection, batch)


def _flush(collection: Any, documents: list[dict[str, Any]]) -> None:
    if collection is not None and documents:
        collection.insert_many(documents)


class EmbeddedDatabaseFile:
    """Context manager: lock, load, yield the database, save when the block ends without an exception.

    An exception (or a killed process) leaves the file as it was: the run's writes are lost
    together, never half of them.
    """

    def __init__(self, path: Path, db_name: str, lock_timeout_seconds: int):
        self.path = data_file(path)
        self.db_name = db_name
        self.lock_timeout_seconds = lock_timeout_seconds
        self._lock = filelock.FileLock(f"{self.path}.lock", timeout=lock_timeout_seconds)
        self._database: Any = None

    def __enter__(self) -> Any:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatabaseConnectionError(
                f"folder of embedded database file {self.path} cannot be created: {exc.strerror}") from exc
        try:
            self._lock.acquire()
        except filelock.Timeout:
            raise DatabaseConnectionError(
                f"embedded database file {self.path} stayed locked by another process for "
                f"{self.lock_timeout_seconds} s (LOCK_TIMEOUT_SECONDS)") from None
        except OSError as exc:
            raise DatabaseConnectionError(f"cannot lock embedded database file {self.path}: {exc.strerror}") from exc
        try:
            remove_stale_temporary_files(self.path)
            database: Any = mongomock.MongoClient()[self.db_name]
            load_database(database, self.path)
        except BaseException:
            self._lock.release()
            raise
        self._database = database
        return database

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        try:
            if exc_type is None:
                try:
                    save_database(self._database, self.path)
                except OSError as err:
                    raise DatabaseConnectionError(
                        f"embedded database file {self.path} cannot be written: {err.strerror}") from err
        finally:
            self._lock.release()
