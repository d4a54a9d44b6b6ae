"""Database wrappers for tests: fail or crash at the k-th write; serialize commands like a server."""

import threading

from pymongo.errors import AutoReconnect, OperationFailure

WRITE_METHODS = frozenset({"update_one", "update_many", "bulk_write", "find_one_and_update", "replace_one",
                           "delete_many", "delete_one", "insert_one", "insert_many"})


class SimulatedCrash(BaseException):
    """The process dies here: a BaseException, which the job does not (and must not) catch."""


def transient(message):
    return AutoReconnect(message)


def permanent(message):
    return OperationFailure(message, code=8000)


def crash(message):
    return SimulatedCrash(message)


class FaultInjector:
    """Counts writes; at the write numbers in `fail_at` (1 is the first) raises `error(message)`,
    before the write reaches the data or, with after_write, after it landed (a lost reply)."""

    def __init__(self, fail_at=(), after_write=False, error=transient):
        self.fail_at = frozenset(fail_at)
        self.after_write = after_write
        self.error = error
        self.writes = []

    def call(self, collection_name, method_name, method, args, kwargs):
        self.writes.append((collection_name, method_name))
        number = len(self.writes)
        if number not in self.fail_at:
            return method(*args, **kwargs)
        if self.after_write:
            method(*args, **kwargs)
        raise self.error(f"injected fault at write {number} ({collection_name}.{method_name})")


class FaultyCollection:
    def __init__(self, collection, injector):
        self._collection = collection
        self._injector = injector

    def __getattr__(self, name):
        attribute = getattr(self._collection, name)
        if name not in WRITE_METHODS:
            return attribute
        return lambda *args, **kwargs: self._injector.call(self._collection.name, name, attribute, args, kwargs)


class FaultyDatabase:
    def __init__(self, database, injector):
        self._database = database
        self._injector = injector

    def __getitem__(self, name):
        return FaultyCollection(self._database[name], self._injector)


class _LockedCursor:
    """A find() whose result is read at once under the lock (sort and limit applied first)."""

    def __init__(self, lock, make_cursor):
        self._lock = lock
        self._make_cursor = make_cursor
        self._steps = []

    def sort(self, *args, **kwargs):
        self._steps.append(("sort", args, kwargs))
        return self

    def limit(self, *args, **kwargs):
        self._steps.append(("limit", args, kwargs))
        return self

    def __iter__(self):
        with self._lock:
            cursor = self._make_cursor()
            for name, args, kwargs in self._steps:
                cursor = getattr(cursor, name)(*args, **kwargs)
            return iter(list(cursor))


class SerializedCollection:
    def __init__(self, collection, lock):
        self._collection = collection
        self._lock = lock

    @property
    def name(self):
        return self._collection.name

    def find(self, *args, **kwargs):
        return _LockedCursor(self._lock, lambda: self._collection.find(*args, **kwargs))

    def __getattr__(self, name):
        method = getattr(self._collection, name)

        def locked(*args, **kwargs):
            with self._lock:
                return method(*args, **kwargs)
        return locked


class SerializedDatabase:
    """mongomock runs find_one_and_update as a read then a write, so two threads could both
    claim one task; a server runs each command atomically. This wrapper gives mongomock the
    server's guarantee: one command at a time, nothing more."""

    def __init__(self, database):
        self._database = database
        self._lock = threading.RLock()

    def __getitem__(self, name):
        return SerializedCollection(self._database[name], self._lock)


class StallInjector:
    """At write `at` (1 is the first) the run stalls: `during_stall()` runs (other runs, an operator)
    before that write reaches the data or, with after_write, after it landed; then the stalled
    run goes on as if nothing had happened, as a run resumed after a long GC pause or a
    suspended VM does."""

    def __init__(self, at, during_stall, after_write=False):
        self.at = at
        self.during_stall = during_stall
        self.after_write = after_write
        self.writes = []

    def call(self, collection_name, method_name, method, args, kwargs):
        self.writes.append((collection_name, method_name))
        if len(self.writes) != self.at:
            return method(*args, **kwargs)
        if self.after_write:
            result = method(*args, **kwargs)
            self.during_stall()
            return result
        self.during_stall()
        return method(*args, **kwargs)
