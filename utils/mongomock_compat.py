"""mongomock 4.3 as the engine of the embedded default (and of the tests): one adaptation to
pymongo 4.20, two speedups, and direct access to the documents it holds.

Production never loads this module: it runs plain pymongo against a server.

1. pymongo 4.11 added a `sort` option to UpdateOne and ReplaceOne and passes it (None
   unless set) to the bulk builder; mongomock 4.3's BulkOperationBuilder does not accept
   the argument, so every bulk_write holding an UpdateOne or a ReplaceOne fails with a
   TypeError (upstream: mongomock issue #912, fix in pull request #933, unmerged). The
   patch lets mongomock accept sort=None and refuses any other value, as mongomock does
   with every option it cannot honour; the job never sorts those operations.
2. Speedup: mongomock's Cursor.__next__ slices its whole result list again for every
   document it returns (`results[skip:][:limit][emitted]`), so reading a cursor to its
   end is quadratic (80,000 documents: 21.7 s). The patch indexes the cached list instead.
3. Speedup: mongomock evaluates `{field: {"$in": values}}` with `value in list`, a scan of
   the list for every document, so an UpdateMany of 10,000 ids over 100,000 cases makes a
   billion comparisons. The patch looks values up in a set built once per list (Python's
   == and hash agree, so the answers are the same); unhashable or regular-expression
   values keep mongomock's own evaluation.
4. Speedup: mongomock applies a whole filter to every document of the collection. When the
   filter requires `{field: {"$in": values}}` of a top-level field, a document whose value
   there is a plain value outside the set cannot match, so it is passed over before the
   filter is applied; every other document is filtered exactly as before.

The speedups change no result (the suite passes with and without them; tests compare both
on random data); DRS_MONGOMOCK_SPEEDUPS=0 in the environment leaves them out. Each patch
does nothing once mongomock behaves so itself. stored_documents and store_documents read
and fill a collection's documents directly, for the embedded data file: no query, no
per-document validation, so loading and saving cost what BSON decoding and encoding cost.
"""

import functools
import inspect
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from mongomock import collection as mongomock_collection
from mongomock import filtering, helpers
from mongomock.collection import BulkOperationBuilder, Cursor

SPEEDUPS_VARIABLE = "DRS_MONGOMOCK_SPEEDUPS"
_PLAIN_NEXT = Cursor.__next__
_PLAIN_IN = filtering._in_op
_PLAIN_ITER_DOCUMENTS = mongomock_collection.Collection._iter_documents


def _accepting_no_sort(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def without_sort(self: Any, *args: Any, sort: object = None, **kwargs: Any) -> Any:
        if sort is not None:
            raise NotImplementedError("mongomock cannot honour the sort option of an UpdateOne or ReplaceOne")
        return method(self, *args, **kwargs)
    return without_sort


def _next_without_copying(self: Cursor) -> Any:
    """The next document of the cursor: the same one mongomock's __next__ returns, without slicing."""
    results = self._compute_results()
    if self._limit and self._emitted >= abs(self._limit):
        raise StopIteration()
    position = self._skip + self._emitted
    if position >= len(results):
        raise StopIteration()
    self._emitted += 1
    return results[position]


# The last $in lists seen, with their sets: the list a filter holds is looked at once per document.
_sets_of_lists: dict[int, tuple[Any, frozenset[Any] | None]] = {}


def _set_of(values: Any) -> frozenset[Any] | None:
    """The members of an $in list as a set, or None when mongomock must evaluate it itself."""
    cached = _sets_of_lists.get(id(values))
    if cached is not None and cached[0] is values:
        return cached[1]
    members: frozenset[Any] | None = None
    if isinstance(values, (list, tuple)) and not any(isinstance(value, filtering._RE_TYPES) for value in values):
        try:
            members = frozenset(values)
        except TypeError:
            members = None
    if len(_sets_of_lists) >= 16:
        _sets_of_lists.pop(next(iter(_sets_of_lists)))
    _sets_of_lists[id(values)] = (values, members)
    return members


def _in_with_a_set(doc_val: Any, search_val: Any) -> bool:
    members = _set_of(search_val)
    if members is None or doc_val is filtering.NOTHING:
        return bool(_PLAIN_IN(doc_val, search_val))
    candidates = doc_val if isinstance(doc_val, (list, tuple)) else [doc_val]
    try:
        return any(candidate in members for candidate in candidates)
    except TypeError:  # an unhashable value (a document, an array) compares as mongomock compares it
        return bool(_PLAIN_IN(doc_val, search_val))


def _in_condition(search_filter: Any) -> tuple[str, frozenset[Any]] | None:
    """(field, set of values) when the filter requires a top-level field to be $in a list of plain values."""
    if not isinstance(search_filter, dict):
        return None
    for field, condition in search_filter.items():
        if field.startswith("$") or "." in field or not isinstance(condition, dict) or list(condition) != ["$in"]:
            continue
        members = _set_of(condition["$in"])
        if members is not None and None not in members:
            return field, members
    return None


_UNINDEXED = (list, tuple, dict)


def _iter_documents_passing_over(self: Any, search_filter: Any) -> Iterator[dict[str, Any]]:
    condition = _in_condition(search_filter)
    if condition is None:
        return _PLAIN_ITER_DOCUMENTS(self, search_filter)
    field, members = condition
    if self._store.is_empty:
        filtering.filter_applies(search_filter, {})
    return (document for document in list(self._store.documents)
            if _may_match(document.get(field, filtering.NOTHING), members)
            and filtering.filter_applies(search_filter, document))


def _may_match(value: Any, members: frozenset[Any]) -> bool:
    """False only when `value`, a plain value, is not in `members` (the $in cannot hold)."""
    if value is filtering.NOTHING or isinstance(value, _UNINDEXED):
        return True
    try:
        return value in members
    except TypeError:
        return True


def speedups_enabled() -> bool:
    return os.environ.get(SPEEDUPS_VARIABLE, "1") != "0"


def patch_mongomock() -> None:
    """Make mongomock's bulk builder accept pymongo's sort=None and, unless DRS_MONGOMOCK_SPEEDUPS=0, read
    cursors and evaluate $in in linear time (idempotent)."""
    for name in ("add_update", "add_replace"):
        method = getattr(BulkOperationBuilder, name)
        if "sort" not in inspect.signature(method, follow_wrapped=False).parameters:
            setattr(BulkOperationBuilder, name, _accepting_no_sort(method))
    speedups = speedups_enabled()
    Cursor.__next__ = _next_without_copying if speedups else _PLAIN_NEXT  # type: ignore[method-assign]
    Cursor.next = Cursor.__next__
    filtering._in_op = _in_with_a_set if speedups else _PLAIN_IN
    filtering._filterer_inst._operator_map["$in"] = filtering._in_op
    mongomock_collection.Collection._iter_documents = (  # type: ignore[method-assign]
        _iter_documents_passing_over if speedups else _PLAIN_ITER_DOCUMENTS)


def stored_documents(collection: Any) -> Iterator[dict[str, Any]]:
    """The documents mongomock holds for `collection`, as they are: no query, no copy."""
    store = collection._store
    with store._rwlock.reader():
        yield from list(store._documents.values())


def store_documents(collection: Any, documents: Iterable[dict[str, Any]]) -> None:
    """Put documents read from the embedded data file into `collection` as mongomock keeps them. They were
    validated when they were first inserted, and saved by stored_documents, so they are not checked again."""
    store = collection._store
    store.create()
    with store._rwlock.writer():
        for document in documents:
            key = document["_id"]
            store._documents[helpers.hashdict(key) if isinstance(key, dict) else key] = document

