"""The embedded default database: mongomock in process, its content persisted in one file.

The file is a sequence of BSON documents: a header, then per collection one record with
its name and indexes followed by one record per document, then a trailer of fixed size
holding the number of records before it and the SHA-256 of their bytes. BSON keeps every
type (ObjectId, datetime, Int64, Decimal128) exactly; the trailer makes any truncation or
flipped bit a refusal to load, never a smaller database. A save writes the records of the documents no write
changed since the load as they were in the loaded file, whose bytes the database keeps (read-only sessions
excepted), and encodes the others (embedded/mongomock_compat.as_loaded). The file is loaded under a lock
that is held until the script ends, and saved through a temporary file and a rename, so a
reader never sees half a file and two processes never interleave their load and save: before its rename,
a save checks that the lock path still names the lock file the run holds and that the data file is the one it
loaded (identity, size, modification time), so a lock file removed during a run never lets a second run's
work be overwritten. A data file with several hard links (one lock per name) is refused. A signal
is acted on at the check points of the lock wait, the load and the save (utils/shutdown.py).

Who holds the lock is written beside it, in `PATH.lock.holder` (program, pid, host, since when), right after
the lock is taken and removed just before it is released: a run that has to wait names the holder once the wait
lasts (LOCK_SLICE_SECONDS), logs its progress every LOCK_PROGRESS_SECONDS, and names the holder when it gives up
after LOCK_TIMEOUT_SECONDS; the time it waited is kept for its run record (held_lock_wait). A holder file left by a
process that died is overwritten by the next holder, and shown as stale to a waiting one.

Only database_update.py creates a data file (`create`): to any other script a missing file is an error, never an
empty database; and nothing creates a folder. A backup is a data file written under the lock (so consistent, and
checksummed like any); a restore checks the backup in full before it replaces the data file, which it keeps beside.
"""

import hashlib
import json
import logging
import os
import re
import socket
import stat
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import bson
import filelock
import mongomock
from bson.errors import BSONError
from bson.int64 import Int64
from pymongo.errors import PyMongoError
from tqdm import tqdm

from embedded.mongomock_compat import (
    LoadedRun,
    as_loaded,
    patch_mongomock,
    store_documents,
    stored_count,
    stored_documents,
)
from utils.collector import collector_paused
from utils.Custom_Exceptions import DatabaseConnectionError
from utils.loggers import permission_refusal, progress_counter
from utils.reports import timestamp
from utils.shutdown import check_point, stop_requested, work_in_hand

FILE_FORMAT = "drs-amend-embedded"
FILE_VERSION = 2
# Version 1 (the first release) had no trailer: still loaded, and rewritten as version 2 by the next save.
LEGACY_VERSION = 1
TEMPORARY_SUFFIX = ".tmp"
# Records a save encodes between two check points (and writes together); the load has one per LOAD_CHUNK documents.
SAVE_CHUNK = 10_000
# Seconds between two attempts to take the lock, each a check point.
LOCK_POLL_SECONDS = 0.05
# The lock is waited for in slices of this many seconds, so that the wait can be reported between two: the holder
# is named after the first one (a wait of a few milliseconds is not worth a line), then the time waited every
# LOCK_PROGRESS_SECONDS.
LOCK_SLICE_SECONDS = 1.0
LOCK_PROGRESS_SECONDS = 10.0
# Beside the lock file: who holds it (LockHolder), as JSON.
HOLDER_SUFFIX = ".holder"
HOLDER_MAX_BYTES = 4096
LOCK_FILE_REMEDY = "chown it, or remove it while no job runs"

log = logging.getLogger("drs_amend.embedded")
# A write made at the very end of a session: (collection, write), see save_database.
FinalWrite = tuple[str, Callable[[Any], None]]
# A file's (st_dev, st_ino): which file a path names, whatever it is named.
FileIdentity = tuple[int, int]
# The data file as a lock holder loaded it: identity, size and modification time (None: there was none).
FileState = tuple[int, int, int, int] | None


def _trailer(records: int, digest: str) -> bytes:
    return bson.encode({"end": {"records": Int64(records), "sha256": digest}})


TRAILER_SIZE = len(_trailer(0, "0" * 64))


class LockLostError(DatabaseConnectionError):
    """The lock file or the data file changed while a run held the lock: another process may have taken the
    lock and saved; the run's save is refused, and the other process's file left as it is."""


class UnreadableFileError(DatabaseConnectionError):
    """A file that cannot be loaded as a data file; `reason` says why, for a message about a backup."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


class DamagedFileError(UnreadableFileError):
    """The embedded data file is not intact; it is never written over."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"embedded database file {path} is damaged ({reason}); it was left unchanged: restore it "
                         f"from a backup, or move it aside and run database_update.py to start afresh",
                         f"it is damaged ({reason})")


def _wall_clock() -> datetime:
    """When a holder took the lock, as its holder file tells the operator (UTC, like the time of a log line)."""
    return datetime.now(UTC)


def program_name(argv: Sequence[str] | None = None) -> str:
    """The script this process runs, with its subcommand ("batch_monitor.py task requeue"), for the holder file:
    at most two words after the script's name, lower-case words only (never an option or its value)."""
    argv = sys.argv if argv is None else argv
    words = [Path(argv[0]).name if argv and argv[0] else "python"]
    for word in argv[1:3]:
        if not re.fullmatch(r"[a-z][a-z-]{0,30}", word):
            break
        words.append(word)
    return " ".join(words)[:100]


def _process_gone(pid: int) -> bool:
    """Whether no process `pid` runs on this host (one of another account does: it may not be signalled)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


@dataclass(frozen=True)
class LockHolder:
    """Who holds the lock of a data file, as its holder file records it."""
    program: str
    pid: int
    host: str
    since: datetime

    @classmethod
    def this_process(cls) -> "LockHolder":
        return cls(program_name(), os.getpid(), socket.gethostname()[:255], _wall_clock().astimezone(UTC))

    def document(self) -> dict[str, Any]:
        return {"program": self.program, "pid": self.pid, "host": self.host, "since": self.since.isoformat()}

    @classmethod
    def parse(cls, data: bytes) -> "LockHolder":
        """The holder a holder file names; ValueError saying why it names none."""
        document = json.loads(data)
        if not isinstance(document, dict):
            raise ValueError("it is not a JSON object")
        program, pid, host, since = (document.get(key) for key in ("program", "pid", "host", "since"))
        if not (isinstance(program, str) and isinstance(host, str) and isinstance(since, str)
                and isinstance(pid, int) and not isinstance(pid, bool) and pid > 0):
            raise ValueError("it does not hold a program, a pid, a host and a time")
        moment = datetime.fromisoformat(since)
        return cls(program[:100], pid, host[:255], moment if moment.tzinfo else moment.replace(tzinfo=UTC))

    def describe(self) -> str:
        return (f"{self.program} pid {self.pid} on host {self.host} since "
                f"{timestamp(self.since)}")

    def gone(self) -> bool:
        """Whether it ran on this host and runs no more (it died holding the lock: its file is stale)."""
        return self.host == socket.gethostname() and self.pid != os.getpid() and _process_gone(self.pid)


def holder_file(lock_path: Path | str) -> Path:
    return Path(f"{lock_path}{HOLDER_SUFFIX}")


def read_holder(lock_path: Path | str) -> LockHolder:
    """The holder the holder file of `lock_path` names; ValueError saying why it names none."""
    path = holder_file(lock_path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(HOLDER_MAX_BYTES + 1)
    except FileNotFoundError:
        raise ValueError(f"{path} is missing (a process of an earlier release, or another program, or one that "
                         f"took the lock this instant)") from None
    except OSError as exc:
        raise ValueError(f"{path} cannot be read ({exc.strerror})") from None
    if len(data) > HOLDER_MAX_BYTES:
        raise ValueError(f"{path} is not a holder file (over {HOLDER_MAX_BYTES} bytes)")
    try:
        return LockHolder.parse(data)
    except ValueError as exc:
        raise ValueError(f"{path} is unreadable ({str(exc).splitlines()[0][:200]})") from None


def lock_holder(lock_path: Path | str) -> str:
    """Who holds the lock of `lock_path`, for a message: "held by main.py pid 123 on host h since ...", or why
    that is unknown."""
    try:
        holder = read_holder(lock_path)
    except ValueError as unknown:
        return f"held by an unknown process: {unknown}"
    if holder.gone():
        return (f"held by an unknown process: {holder_file(lock_path)} names {holder.describe()}, which runs no "
                f"more (a stale file, left by a process that died)")
    return f"held by {holder.describe()}"


def write_holder(lock_path: Path | str) -> LockHolder:
    """Record this process as the holder of `lock_path` (which it holds); a file another account left there
    that this process may not write is a DatabaseConnectionError naming its owner."""
    path, holder = holder_file(lock_path), LockHolder.this_process()
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    try:
        descriptor = os.open(path, flags, 0o644)
    except PermissionError as exc:
        raise DatabaseConnectionError(permission_refusal("lock holder file", path, "written")) from exc
    except OSError as exc:
        raise DatabaseConnectionError(f"lock holder file {path} cannot be written: {exc.strerror}") from exc
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(json.dumps(holder.document()).encode())
    return holder


def remove_holder(lock_path: Path | str, holder: LockHolder | None) -> None:
    """Remove the holder file of `lock_path` if it names `holder` (this process), before the lock is released:
    one another process wrote (its lock file was removed under this one) stays."""
    path = holder_file(lock_path)
    try:
        if holder is None or read_holder(lock_path) != holder:
            return
    except ValueError:
        return
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("%s cannot be removed (%s); the next holder of the lock overwrites it", path, exc.strerror)


# The seconds this process waited for the lock of each data file it holds (see held_lock_wait).
_held_lock_waits: dict[Path, float] = {}


def held_lock_wait(path: Path | str) -> float:
    """The seconds this process waited for another's lock of the data file `path`, which it holds now (0 when
    it holds none, or took it at once): main.py records it apart from the run's duration."""
    return _held_lock_waits.get(data_file(path), 0.0)


def new_database(db_name: str) -> Any:
    """An empty database of the embedded engine, adapted when it opens (on the proven mongomock only)."""
    patch_mongomock()
    return mongomock.MongoClient()[db_name]


def document_count(database: Any) -> int:
    return sum(stored_count(database[name]) for name in database.list_collection_names())


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


def _status(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except FileNotFoundError:
        return None


def _state(status: os.stat_result | None) -> FileState:
    return None if status is None else (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)


def remove_stale_temporary_files(target: Path) -> None:
    """Temporary files of saves that were killed (kill -9) before their rename; only a lock holder calls this."""
    prefix = target.name + "."
    for candidate in target.parent.iterdir():
        if candidate.name.startswith(prefix) and candidate.name.endswith(TEMPORARY_SUFFIX):
            log.warning("removing %s, left by a save that was interrupted", candidate)
            try:
                candidate.unlink(missing_ok=True)
            except PermissionError:
                log.warning("%s", permission_refusal("temporary file", candidate, "removed", "remove it by hand"))
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


def _collection_order(database: Any, last: str | None) -> list[str]:
    names = sorted(database.list_collection_names())
    return [name for name in names if name != last] + ([last] if last else [])


def _records_to_save(database: Any, final_write: FinalWrite | None) -> Iterator[dict[str, Any] | LoadedRun]:
    """The records of the data file: its header, then each collection's header and documents; runs of documents
    still as they were loaded come as the bytes of their records in the loaded file (as_loaded)."""
    yield {"format": FILE_FORMAT, "version": FILE_VERSION}
    for name in _collection_order(database, final_write[0] if final_write else None):
        if final_write and name == final_write[0]:
            final_write[1](database)
        collection = database[name]
        yield {"collection": name, "indexes": _index_specs(collection)}
        for item in as_loaded(collection, stored_documents(collection)):
            yield item if isinstance(item, LoadedRun) else {"d": item}


def save_database(database: Any, path: Path | str, final_write: FinalWrite | None = None,
                  before_replace: Callable[[], None] | None = None, overwrite: bool = True) -> None:
    """Write every collection of `database` to `path` atomically (temporary file, then rename), keeping
    the file's permissions and owner, and a symlink pointing to it. The documents are taken as
    mongomock holds them (no query). `final_write` (collection, write) is made after every other
    collection is written, just before that collection is, so that it can report the whole save.
    `before_replace` is called just before the rename: an exception it raises keeps the previous file.
    Without `overwrite` (a backup), the file is linked into place instead: a file of that name, even one
    created meanwhile, is a FileExistsError and stays as it is."""
    started = time.monotonic()
    target = data_file(path)
    mode, owner = _mode_and_owner(target)
    handle = tempfile.NamedTemporaryFile(dir=target.parent, prefix=target.name + ".", suffix=TEMPORARY_SUFFIX,
                                         delete=False)
    try:
        with handle:
            records, digest = _write_records(handle, database, final_write, target)
            handle.write(_trailer(records, digest))
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            if owner is not None and owner != (os.getuid(), os.getgid()):
                try:
                    os.fchown(handle.fileno(), *owner)
                except PermissionError:
                    log.warning("%s now belongs to the user running this script: only root may keep its owner",
                                target)
            os.fsync(handle.fileno())
        check_point()  # the last one: once renamed, the file is saved, and a signal changes nothing of it
        if before_replace is not None:
            before_replace()
        if overwrite:
            os.replace(handle.name, target)
        else:
            os.link(handle.name, target)
            os.unlink(handle.name)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    log.info("saved %d record(s), %.1f MB, to %s in %.2f s", records, target.stat().st_size / 2**20, target,
             time.monotonic() - started)


def _write_records(handle: Any, database: Any, final_write: FinalWrite | None, target: Path) -> tuple[int, str]:
    """Write the records of `database` to `handle`: the number of records and the SHA-256 of their bytes. They
    are encoded SAVE_CHUNK at a time and written together, and the runs of records kept from the load as they
    are, a check point after each."""
    digest, records, encoded = hashlib.sha256(), 0, list[bytes]()

    def write(data: bytes | memoryview, count: int) -> None:
        nonlocal records
        digest.update(data)
        handle.write(data)
        records += count
        bar.update(count)
        check_point()

    total = 1 + sum(1 + stored_count(database[name]) for name in database.list_collection_names())
    with progress_counter(f"saving {target.name}", "record", total) as bar:
        for record in _records_to_save(database, final_write):
            if isinstance(record, LoadedRun):
                write(b"".join(encoded), len(encoded))
                encoded.clear()
                write(record.data, record.documents)
                continue
            encoded.append(bson.encode(record))
            if len(encoded) == SAVE_CHUNK:
                write(b"".join(encoded), len(encoded))
                encoded.clear()
        write(b"".join(encoded), len(encoded))
    return records, digest.hexdigest()


def _verified_body(data: bytes, path: Path) -> tuple[int, int | None]:
    """The length of the records of a version 2 file, after checking the trailer's checksum; and the number of
    records the trailer announces."""
    if len(data) < TRAILER_SIZE:
        raise DamagedFileError(path, "it ends before its integrity trailer")
    end = len(data) - TRAILER_SIZE
    try:
        announced = bson.decode(data[end:])["end"]
        expected_records, expected_digest = announced["records"], announced["sha256"]
    except (BSONError, KeyError, TypeError, AttributeError):
        raise DamagedFileError(path, "its integrity trailer is missing or unreadable: the file is truncated or "
                                     "was changed") from None
    if hashlib.sha256(memoryview(data)[:end]).hexdigest() != expected_digest:
        raise DamagedFileError(path, "its checksum does not match its content")
    return end, int(expected_records)


def _file_body(path: Path) -> tuple[bytes, int, int | None]:
    """The file's bytes, the length of its records (the trailer follows them) and the number of records the
    trailer announces (None: a file of the first release)."""
    data = path.read_bytes()
    try:
        length = int.from_bytes(data[:4], "little")
        header = bson.decode(data[:length]) if len(data) >= 5 else None
    except BSONError:
        header = None
    if not header or header.get("format") != FILE_FORMAT:
        raise UnreadableFileError(f"embedded database file {path} cannot be read: it is not a DRS Amend data file; it "
                                  f"was left unchanged", "it is not a DRS Amend data file")
    if header.get("version") == FILE_VERSION:
        return data, *_verified_body(data, path)
    if header.get("version") == LEGACY_VERSION:
        log.warning("%s has the first release's format, without integrity check; the next save adds one", path)
        return data, len(data), None
    raise DamagedFileError(path, f"its format version is {header.get('version')!r}; this release reads "
                                 f"{LEGACY_VERSION} and {FILE_VERSION}")


_LENGTH = struct.Struct("<i")  # the length that begins a BSON document


def _record_offsets(data: bytes, end: int, path: Path) -> list[int]:
    """Where each BSON record of data[:end] begins, from their length prefixes, then `end`."""
    offsets, offset, length_at = [], 0, _LENGTH.unpack_from
    while offset < end:
        (length,) = length_at(data, offset) if end - offset >= 5 else (0,)
        if length < 5 or offset + length > end:
            raise DamagedFileError(path, f"a record at byte {offset} runs past the end of the file")
        offsets.append(offset)
        offset += length
    offsets.append(end)
    return offsets


_DOCUMENT_RECORD = bytes([0x03]) + b"d\x00"  # {"d": <document>}: an embedded document named "d"
LOAD_CHUNK = 10_000


def load_database(database: Any, path: Path | str, skip: Collection[str] = (), for_saving: bool = True) -> None:
    """Fill `database` from `path` (the documents of the collections in `skip` are left out, not even
    decoded); a missing file is an empty database, a damaged one a DamagedFileError. `for_saving`: the file's
    bytes are kept with the database, so that its save writes the records of the documents no write changed
    as they are, without encoding them again (embedded/mongomock_compat.as_loaded)."""
    started = time.monotonic()
    path = data_file(path)
    if not path.exists():
        return
    try:
        data, end, expected_records = _file_body(path)
        offsets = _record_offsets(data, end, path)
        if expected_records is not None and len(offsets) - 1 != expected_records:
            raise DamagedFileError(path, f"it holds {len(offsets) - 1} records where its trailer says "
                                         f"{expected_records}")
        check_point()
        with collector_paused(), progress_counter(f"loading {path.name}", "record", len(offsets) - 1) as bar:
            bar.update()  # the file's header
            documents = _fill(database, data if for_saving else None, data, offsets, path, skip, bar)
    except OSError as exc:
        raise UnreadableFileError(f"embedded database file {path} cannot be read: {exc.strerror}",
                                  f"it cannot be read: {exc.strerror}") from exc
    except BSONError as exc:
        raise DamagedFileError(path, f"a record cannot be decoded: {exc}") from exc
    except (KeyError, TypeError, ValueError, PyMongoError) as exc:
        raise DamagedFileError(path, f"a record does not have the shape of this format: {exc}") from exc
    log.info("loaded %d document(s), %.1f MB, from %s in %.2f s", documents, end / 2**20, path,
             time.monotonic() - started)
    check_point()


def _fill(database: Any, kept: bytes | None, data: bytes, offsets: list[int], path: Path, skip: Collection[str],
          bar: tqdm) -> int:
    """The collections of the records (after the file's header) into `database`; the number of documents loaded.
    The documents are decoded LOAD_CHUNK at a time, as fast as all at once, so that the progress bar moves;
    `kept` (the file's bytes, or None) is where each came from, for the save."""
    loaded, index, last = 0, 1, len(offsets) - 1
    while index < last:
        header = bson.decode(data[offsets[index]:offsets[index + 1]])
        if "collection" not in header:
            raise DamagedFileError(path, "it has a record of unknown shape")
        name = header["collection"]
        collection = database[name]
        database.create_collection(name)
        for spec in header["indexes"]:
            collection.create_index([tuple(pair) for pair in spec["key"]], name=spec["name"], unique=spec["unique"])
        first = index = index + 1
        while index < last and data.startswith(_DOCUMENT_RECORD, offsets[index] + 4):
            index += 1
        bar.update(1 + (index - first if name in skip else 0))
        if name in skip:
            continue
        for chunk in range(first, index, LOAD_CHUNK):
            check_point()
            stop = min(chunk + LOAD_CHUNK, index)
            documents = [record["d"] for record in bson.decode_all(data[offsets[chunk]:offsets[stop]])]
            store_documents(collection, documents, None if kept is None else (kept, offsets[chunk:stop + 1]))
            loaded += len(documents)
            bar.update(len(documents))
    return loaded


def read_backup(path: Path, db_name: str) -> Any:
    """The content of a backup, loaded in full (its checksum and every record checked) into a new database,
    before anything is replaced by it."""
    if not os.path.exists(path):
        raise DatabaseConnectionError(f"backup {path} does not exist; nothing was restored")
    database = new_database(db_name)
    try:
        load_database(database, path)
    except UnreadableFileError as exc:
        raise DatabaseConnectionError(f"backup {path} cannot be restored: {exc.reason}; nothing was "
                                      f"restored") from exc
    return database


class EmbeddedDatabaseFile:
    """Context manager: lock, load, yield the database, save when the block ends without an exception.

    An exception (or a killed process) leaves the file as it was: the run's writes are lost
    together, never half of them. Read only: no lock, no save; the file is read as the last
    save left it (saves are atomic renames), so a reader never waits for a writer and never
    changes the file. `skip`: collections whose documents are not loaded (about to be replaced).
    `create`: a missing data file is an empty database, created by the save (database_update.py
    only); otherwise it is an error. The folder of the file must exist: nothing creates one.
    """

    def __init__(self, path: Path, db_name: str, lock_timeout_seconds: int, read_only: bool = False,
                 skip: Collection[str] = (), final_write: FinalWrite | None = None, create: bool = False):
        self.path = data_file(path)
        self.db_name = db_name
        self.lock_timeout_seconds = lock_timeout_seconds
        self.read_only = read_only
        self.skip = skip
        self.final_write = final_write
        self.create = create
        self._lock = filelock.FileLock(f"{self.path}.lock", timeout=lock_timeout_seconds,
                                       on_acquired=self._note_held_lock)
        self._held_lock: FileIdentity | None = None
        self._holder: LockHolder | None = None
        self.lock_wait_seconds = 0.0  # how long the lock was waited for (0: taken at once, or not taken)
        self._loaded: FileState = None
        self._database: Any = None
        self._session = ExitStack()

    def _note_held_lock(self, descriptor: int) -> None:
        """filelock's on_acquired: which file this run locked (the lock path may name another one later), and who
        holds it, in the holder file (written here, so only by a holder; an error gives the lock back)."""
        status = os.fstat(descriptor)
        self._held_lock = status.st_dev, status.st_ino
        self._holder = write_holder(self._lock.lock_file)

    def _missing(self) -> DatabaseConnectionError:
        return DatabaseConnectionError(
            f"embedded database file {self.path} does not exist: create it with database_update.py (or correct "
            f"the path of MONGO_URI / DRS_MONGO_URI)")

    def check_location(self) -> None:
        """Before anything is written (a lock file included): the folder exists, the path is no folder, and the
        file exists unless it may be created."""
        if not os.path.isdir(self.path.parent):
            raise DatabaseConnectionError(
                f"the folder {self.path.parent} of embedded database file {self.path.name} does not exist: create "
                f"it, or correct the path of MONGO_URI / DRS_MONGO_URI")
        if os.path.isdir(self.path):
            raise DatabaseConnectionError(
                f"embedded database file {self.path} is a folder: give the path of a file in MONGO_URI / "
                f"DRS_MONGO_URI (embedded://var/drs_embedded_db.bson as shipped)")
        if not self.create and not os.path.exists(self.path):
            raise self._missing()

    def _state_before_loading(self) -> FileState:
        """The data file's state as this lock holder loads it. A file with other hard links is refused: each
        name would take a lock of its own, so two runs could load it together and one overwrite the other.
        A file removed while this run waited for the lock is missing as it would have been before."""
        status = _status(self.path)
        if status is None and not self.create:
            raise self._missing()
        if status is not None and status.st_nlink > 1:
            raise DatabaseConnectionError(
                f"embedded database file {self.path} has {status.st_nlink} hard links, each of which would be locked "
                f"apart; give the job one path to it (a symlink is followed) and remove the other links")
        return _state(status)

    def _confirm_still_held(self) -> None:
        """Before the save's rename: the lock path still names the lock file this run holds, and the data file
        is still the one it loaded; otherwise another process may have run meanwhile and its save must stay."""
        lock_path = Path(self._lock.lock_file)
        lock_status = _status(lock_path)
        if lock_status is None or (lock_status.st_dev, lock_status.st_ino) != self._held_lock:
            raise LockLostError(
                f"the lock file {lock_path} was removed or replaced while this run held it: another process may "
                f"have run; nothing of this run was saved (never remove the lock of a running job; run it again)")
        if _state(_status(self.path)) != self._loaded:
            raise LockLostError(
                f"embedded database file {self.path} was replaced or changed while this run held its lock: another "
                f"process wrote it; nothing of this run was saved (run the job again)")

    def _try_lock(self, seconds: float) -> bool:
        """One slice of the wait for the lock (each poll a check point): whether it was taken."""
        try:
            self._lock.acquire(timeout=seconds, poll_interval=LOCK_POLL_SECONDS, cancel_check=stop_requested)
        except filelock.Timeout:
            check_point()  # a stop request cancelled the wait
            return False
        except PermissionError as exc:
            raise DatabaseConnectionError(permission_refusal("lock file", exc.filename or self._lock.lock_file,
                                                             "opened", LOCK_FILE_REMEDY)) from exc
        except OSError as exc:
            raise DatabaseConnectionError(f"cannot lock embedded database file {self.path}: {exc.strerror}") from exc
        return True

    def _wait_for_lock(self) -> float:
        """Take the lock: at once (0 s waited), or in slices of LOCK_SLICE_SECONDS up to LOCK_TIMEOUT_SECONDS,
        naming the holder after the first and logging the time waited every LOCK_PROGRESS_SECONDS. The seconds
        waited (monotonic time); a DatabaseConnectionError naming the holder at the timeout."""
        started, timeout, lock_path = time.monotonic(), self.lock_timeout_seconds, self._lock.lock_file
        if self._try_lock(0):
            return 0.0
        holder, next_report = None, LOCK_PROGRESS_SECONDS
        while (waited := time.monotonic() - started) < timeout:
            if self._try_lock(min(LOCK_SLICE_SECONDS, timeout - waited)):
                waited = time.monotonic() - started
                log.info("took the lock of %s after waiting %.1f s", self.path, waited)
                return waited
            waited = time.monotonic() - started
            if holder is None:
                holder = lock_holder(lock_path)
                log.info("waiting for the lock of %s, %s (for up to %d s, LOCK_TIMEOUT_SECONDS)", self.path, holder,
                         timeout)
            elif waited >= next_report:
                now_held = lock_holder(lock_path)
                next_report = (waited // LOCK_PROGRESS_SECONDS + 1) * LOCK_PROGRESS_SECONDS
                log.info("still waiting for the lock of %s: %.0f s of %d s (LOCK_TIMEOUT_SECONDS)%s", self.path,
                         waited, timeout, "" if now_held == holder else f", now {now_held}")
                holder = now_held
        raise DatabaseConnectionError(
            f"embedded database file {self.path} stayed locked by another process for {timeout} s "
            f"(LOCK_TIMEOUT_SECONDS), {lock_holder(lock_path)}: let it finish, or stop it if it hangs")

    @contextmanager
    def _holding_lock(self) -> Iterator[None]:
        """The data file's lock for the block (the wait for it a check point at each poll, and measured), the
        file's state noted as it was when the lock was taken; the holder file removed before the release."""
        self.check_location()
        work_in_hand()
        self.lock_wait_seconds = self._wait_for_lock()
        _held_lock_waits[self.path] = self.lock_wait_seconds
        try:
            self._loaded = self._state_before_loading()
            remove_stale_temporary_files(self.path)
            yield
        finally:
            _held_lock_waits.pop(self.path, None)
            try:
                remove_holder(self._lock.lock_file, self._holder)
            finally:
                self._holder = None
                self._lock.release()

    def __enter__(self) -> Any:
        database = new_database(self.db_name)
        if self.read_only:
            self.check_location()
            load_database(database, self.path, self.skip, for_saving=False)
            self._database = database
            return database
        self._session.enter_context(self._holding_lock())
        try:
            load_database(database, self.path, self.skip)
        except BaseException:
            self._session.close()
            raise
        self._database = database
        return database

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self.read_only:
            return
        with self._session:
            if exc_type is None:
                try:
                    save_database(self._database, self.path, self.final_write, self._confirm_still_held)
                except PermissionError as err:
                    raise DatabaseConnectionError(
                        f"embedded database file {self.path} cannot be written: "
                        f"{permission_refusal('temporary file', err.filename or self.path, 'written')}") from err
                except OSError as err:
                    raise DatabaseConnectionError(
                        f"embedded database file {self.path} cannot be written: {err.strerror}") from err

    def back_up(self, target: Path) -> int:
        """Copy the data file to `target`, a new file, under the lock (so that no run is halfway): loaded in
        full (checked) and saved, a data file of this format with its checksum. The number of documents."""
        with self._holding_lock():
            database = new_database(self.db_name)
            load_database(database, self.path)
            try:
                save_database(database, target, overwrite=False)
            except OSError as exc:
                raise DatabaseConnectionError(f"backup {target} cannot be written: {exc.strerror}; the data file "
                                              f"was left unchanged") from exc
        return document_count(database)

    def replace_with(self, database: Any, aside: Path) -> bool:
        """Under the lock, save `database` (a backup read_backup checked) as the data file; the file it replaces
        is kept as `aside` (a link made just before the rename). Whether there was a file to keep."""
        with self._holding_lock():
            existed = self._loaded is not None

            def keep_aside() -> None:
                self._confirm_still_held()
                if existed:
                    os.link(self.path, aside)
            try:
                save_database(database, self.path, before_replace=keep_aside)
            except OSError as exc:
                target = aside if isinstance(exc, FileExistsError) else self.path
                raise DatabaseConnectionError(f"{target} cannot be written: {exc.strerror}; nothing was "
                                              f"restored") from exc
        return existed
