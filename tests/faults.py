"""A database wrapper that fails the k-th write, before or after it reaches the data."""

from pymongo.errors import AutoReconnect

WRITE_METHODS = frozenset({"update_one", "update_many", "bulk_write", "find_one_and_update", "replace_one",
                           "delete_many", "delete_one", "insert_one", "insert_many"})


class FaultInjector:
    """Counts writes; raises AutoReconnect at the write numbers in `fail_at` (1 is the first)."""

    def __init__(self, fail_at=(), after_write=False):
        self.fail_at = frozenset(fail_at)
        self.after_write = after_write
        self.writes = []

    def call(self, collection_name, method_name, method, args, kwargs):
        self.writes.append((collection_name, method_name))
        number = len(self.writes)
        if number not in self.fail_at:
            return method(*args, **kwargs)
        if self.after_write:
            method(*args, **kwargs)
        raise AutoReconnect(f"injected fault at write {number} ({collection_name}.{method_name})")


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
