"""Instruments around a database, for the tests (and the benchmarks, which count commands with them).

InstrumentedDatabase passes every command the store sends (amend_store.READ_COMMANDS and
WRITE_COMMANDS) through one hook, which may count it, delay it, fail it or run something
else first; CommandLog is the hook that counts: commands, the documents they wrote, and the
documents and BSON bytes they returned. Only pymongo's public API is used.
"""

from collections.abc import Callable, Iterator
from typing import Any

import bson

from amend_store import READ_COMMANDS, WRITE_COMMANDS

# hook(collection name, command name, run the command, the command's arguments) -> what the command returns
Hook = Callable[[str, str, Callable[[], Any], tuple[Any, ...]], Any]


class InstrumentedCollection:
    def __init__(self, collection: Any, hook: Hook):
        self._collection = collection
        self._hook = hook

    @property
    def name(self) -> str:
        return str(self._collection.name)

    def __getattr__(self, attribute: str) -> Any:
        method = getattr(self._collection, attribute)
        if attribute not in READ_COMMANDS | WRITE_COMMANDS:
            return method
        return lambda *args, **kwargs: self._hook(self.name, attribute, lambda: method(*args, **kwargs), args)


class InstrumentedDatabase:
    """A database whose commands all go through `hook`; `replacements` stand in for some collections."""

    def __init__(self, database: Any, hook: Hook, replacements: dict[str, Any] | None = None):
        self._database = database
        self._hook = hook
        self._replacements = replacements or {}

    @property
    def name(self) -> str:
        return str(self._database.name)

    def __getitem__(self, name: str) -> InstrumentedCollection:
        return InstrumentedCollection(self._replacements.get(name) or self._database[name], self._hook)


def documents_touched(command: str, result: Any) -> int:
    """How many documents a write command wrote (matched, upserted, inserted or deleted)."""
    if command == "bulk_write":
        return int(result.matched_count + result.upserted_count + result.inserted_count + result.deleted_count)
    if command in ("update_one", "update_many", "replace_one"):
        return int(result.matched_count + (1 if result.upserted_id is not None else 0))
    if command in ("delete_one", "delete_many"):
        return int(result.deleted_count)
    if command == "insert_many":
        return len(result.inserted_ids)
    return 0 if result is None else 1


class CountedCursor:
    """A cursor whose documents are counted as they are taken, into one command's slot of a CommandLog
    (sort and limit pass through, as the job chains them)."""

    def __init__(self, cursor: Any, log: "CommandLog", slot: int):
        self._cursor, self._log, self._slot = cursor, log, slot

    def sort(self, *args: Any, **kwargs: Any) -> "CountedCursor":
        return CountedCursor(self._cursor.sort(*args, **kwargs), self._log, self._slot)

    def limit(self, count: int) -> "CountedCursor":
        return CountedCursor(self._cursor.limit(count), self._log, self._slot)

    def __iter__(self) -> Iterator[Any]:
        for document in self._cursor:
            self._log.count_returned(self._slot, document)
            yield document


class CommandLog:
    """The hook that counts: one (collection, command) per command sent (a cursor's getMore batches are
    not commands of their own), the documents each wrote, and the documents and BSON bytes each returned."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, str]] = []
        self.written: list[int] = []
        self.returned: list[int] = []
        self.returned_bytes: list[int] = []

    def __call__(self, collection: str, command: str, call: Callable[[], Any], args: tuple[Any, ...] = ()) -> Any:
        slot = len(self.commands)
        self.commands.append((collection, command))
        self.returned.append(0)
        self.returned_bytes.append(0)
        result = call()
        self.written.append(documents_touched(command, result) if command in WRITE_COMMANDS else 0)
        if command in ("find", "aggregate"):
            return CountedCursor(result, self, slot)
        if isinstance(result, dict):  # find_one, find_one_and_update
            self.count_returned(slot, result)
        return result

    def count_returned(self, slot: int, document: Any) -> None:
        self.returned[slot] += 1
        self.returned_bytes[slot] += len(bson.encode(document))

    def documents_returned_to_first_task(self) -> tuple[int, int]:
        """(documents, BSON bytes) the commands from the first claim to the end of the run returned."""
        first = self._first_claim()
        return sum(self.returned[first:]), sum(self.returned_bytes[first:])

    def _first_claim(self) -> int:
        return self.commands.index(("System_tasks", "find_one_and_update"))

    def commands_of_first_task(self) -> list[tuple[str, str]]:
        """The commands from the first claim to the end of the run."""
        return self.commands[self._first_claim():]

    def documents_written_by_first_task(self) -> int:
        return sum(self.written[self._first_claim():])
