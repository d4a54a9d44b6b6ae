"""mongomock 4.3 as the engine of the embedded default (and of the tests): one adaptation to
pymongo 4.20, four speedups, and direct access to the documents it holds.

A run against a server never loads this module (utils/connectDB.py imports the embedded engine
only for an embedded:// URI; a test proves it): production runs plain pymongo.

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
   billion comparisons. The patch looks values up in a set built once per query, when the
   query starts (Python's == and hash agree, so the answers are the same); unhashable or
   regular-expression values keep mongomock's own evaluation.
4. Speedup: mongomock applies a whole filter to every document of the collection, through a
   general evaluator (half of reading a batch, once projections were fast). Two kinds of top-level condition are
   judged directly: `{field: "text"}` (a text value matches only the same text) and
   `{field: {"$in": values}}` (a plain value outside the set cannot match). A document
   they exclude is passed over; one they accept, when they are the whole filter and its
   values there are text, is taken; mongomock evaluates every other document as before.
   The documents are taken from the dict under mongomock's OrderedDict, in the same order,
   without the OrderedDict's lookup that hashes every ObjectId key again in Python.
5. Speedup: mongomock projects each document of a find through a general projection engine
   that parses the projection again for every document (three quarters of reading 100,000
   cases, profiled). A projection that only includes top-level fields (`{"a": 1, "_id": 0}`) is
   parsed once and applied as mongomock applies it: the included fields in the document's
   order, copied, then `_id` last unless excluded. Any other projection goes to mongomock.

The speedups change no result (the suite passes with and without them; tests compare both
on random data); DRS_MONGOMOCK_SPEEDUPS=0 in the environment leaves them out.

Nothing is patched when this module is imported. patch_mongomock applies the adaptation and the
speedups, and embedded/data_file.py calls it each time it opens the embedded default (the suite and
the tools that run mongomock call it themselves). It applies them only to the mongomock version they
were proven on, PROVEN_MONGOMOCK_VERSION (4.3.0, pinned in requirements.txt and constraints.txt),
as importlib.metadata reports the installed version: they replace private functions of that
release. On any other version patch_mongomock logs one warning per process, naming the installed
and the proven versions, and applies nothing: plain mongomock runs, without the adaptation (a bulk
write holding an UpdateOne or a ReplaceOne may then fail) and without the speedups. A new mongomock
release is taken by raising the pin and PROVEN_MONGOMOCK_VERSION together, once this suite, which
runs with and without the speedups, passes on it.

stored_documents and store_documents read and fill a collection's documents directly, for the
embedded data file: no query, no per-document validation, so loading and saving cost what BSON
decoding and encoding cost. They are no patch: they read mongomock's store whatever its version.
"""

import functools
import importlib.metadata
import inspect
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from mongomock import collection as mongomock_collection
from mongomock import filtering, helpers
from mongomock.collection import BulkOperationBuilder, Cursor

SPEEDUPS_VARIABLE = "DRS_MONGOMOCK_SPEEDUPS"
# The mongomock release the adaptation and the speedups were proven on: the one requirements.txt pins.
PROVEN_MONGOMOCK_VERSION = "4.3.0"
_PLAIN_NEXT = Cursor.__next__
_PLAIN_IN = filtering._in_op
_PLAIN_ITER_DOCUMENTS = mongomock_collection.Collection._iter_documents
_PLAIN_COPY_ONLY_FIELDS = mongomock_collection.Collection._copy_only_fields

log = logging.getLogger("drs_amend.embedded")
# Whether this process has warned that the installed mongomock is not the proven one (it warns once).
_unproven_version_reported = False


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


class _InList(list[Any]):
    """An $in list of the query being evaluated, with its `members` as a set, or None when mongomock must
    compare them itself (an unhashable or regular-expression value). Made when the query starts, as a
    server receives the filter then: the caller's own list is neither kept nor changed."""

    members: frozenset[Any] | None = None


def _in_list(values: list[Any]) -> _InList:
    in_list = _InList(values)
    if not any(isinstance(value, filtering._RE_TYPES) for value in in_list):
        try:
            in_list.members = frozenset(in_list)
        except TypeError:
            in_list.members = None
    return in_list


def _with_in_sets(node: Any) -> Any:
    """A copy of a filter whose $in lists are _InLists, everything else equal."""
    if isinstance(node, dict):
        return {key: _in_list(value) if key == "$in" and type(value) is list else _with_in_sets(value)
                for key, value in node.items()}
    if isinstance(node, list):
        return [_with_in_sets(item) for item in node]
    return node


def _in_with_a_set(doc_val: Any, search_val: Any) -> bool:
    members = search_val.members if isinstance(search_val, _InList) else None
    if members is None or doc_val is filtering.NOTHING:
        return bool(_PLAIN_IN(doc_val, search_val))
    candidates = doc_val if isinstance(doc_val, (list, tuple)) else [doc_val]
    try:
        return any(candidate in members for candidate in candidates)
    except TypeError:  # an unhashable value (a document, an array) compares as mongomock compares it
        return bool(_PLAIN_IN(doc_val, search_val))


@dataclass(frozen=True)
class _SimpleConditions:
    """The top-level conditions of a filter a document can be judged on without mongomock's evaluation."""
    equal_to_text: tuple[tuple[str, str], ...]  # {"field": "text"}
    members_of: tuple[tuple[str, frozenset[Any]], ...]  # {"field": {"$in": [plain values]}}
    whole_filter: bool  # nothing else in the filter

    @property
    def first_members_of(self) -> tuple[str, frozenset[Any]]:
        """The first {"field": {"$in": ...}} condition, ("", an empty set) when there is none."""
        return self.members_of[0] if self.members_of else ("", frozenset())


def _is_top_level_field(field: Any) -> bool:
    """A field of the document itself: text, not empty, neither an operator nor a dotted path."""
    return isinstance(field, str) and bool(field) and not field.startswith("$") and "." not in field


def _plain_members(condition: Any) -> frozenset[Any] | None:
    """The set of an `{"$in": values}` condition (made when the query started); None for any other condition,
    for an $in whose values mongomock must compare itself, and for one holding None (it matches a missing
    field)."""
    if not isinstance(condition, dict) or list(condition) != ["$in"] or not isinstance(condition["$in"], _InList):
        return None
    members = condition["$in"].members
    return None if members is None or None in members else members


def _simple_conditions(search_filter: Any) -> _SimpleConditions | None:
    if not isinstance(search_filter, dict):
        return None
    equal_to_text, members_of, whole_filter = [], [], True
    for field, condition in search_filter.items():
        if not _is_top_level_field(field):
            whole_filter = False
        elif type(condition) is str:
            equal_to_text.append((field, condition))
        elif (members := _plain_members(condition)) is not None:
            members_of.append((field, members))
        else:
            whole_filter = False
    if not equal_to_text and not members_of:
        return None
    return _SimpleConditions(tuple(equal_to_text), tuple(members_of), whole_filter)


_UNINDEXED = (list, tuple, dict)


def _iter_documents_judging_simple_conditions(self: Any, search_filter: Any) -> Iterator[dict[str, Any]]:
    search_filter = _with_in_sets(search_filter)
    conditions = _simple_conditions(search_filter)
    if conditions is None:
        return _PLAIN_ITER_DOCUMENTS(self, search_filter)
    if self._store.is_empty:
        filtering.filter_applies(search_filter, {})
    return _matching(_documents_of(self._store), search_filter, conditions)


def _matching(documents: list[dict[str, Any]], search_filter: Any,
              conditions: _SimpleConditions) -> Iterator[dict[str, Any]]:
    """The documents the filter matches. A text value equals only the same text, and a plain value outside an
    $in set cannot be in it: those documents are passed over. A document whose values there are all text,
    and which the simple conditions (the whole filter) accept, is taken. mongomock judges every other one."""
    first_field, first_members = conditions.first_members_of
    equal_to_text, members_of = conditions.equal_to_text, conditions.members_of
    for document in documents:
        if first_field:  # an $in scan's usual document, passed over before anything else is looked at
            value = document.get(first_field, filtering.NOTHING)
            if type(value) in _IMMUTABLE and value not in first_members:
                continue
        judged = conditions.whole_filter
        for field, text in equal_to_text:  # inline: a read of a whole batch judges every document here
            value = document.get(field, filtering.NOTHING)
            if type(value) is not str:
                judged = False
            elif value != text:
                break
        else:
            verdict = _judged_on_members(document, members_of, judged) if members_of else judged
            if verdict or (verdict is not None and filtering.filter_applies(search_filter, document)):
                yield document


def _judged_on_members(document: dict[str, Any], members_of: tuple[tuple[str, frozenset[Any]], ...],
                       judged: bool) -> bool | None:
    """None when a plain value of the document lies outside its $in set (the document is passed over);
    otherwise whether the document is still judged without mongomock (`judged`, and its values there are
    all text)."""
    for field, members in members_of:
        value = document.get(field, filtering.NOTHING)
        if type(value) is not str:
            judged = False
        if value is filtering.NOTHING or isinstance(value, _UNINDEXED):
            continue
        try:
            if value not in members:
                return None
        except TypeError:  # unhashable: mongomock compares it
            continue
    return judged


# The last projections seen, as (the projection, its items when seen, what _inclusion_of made of them).
_parsed_projections: dict[int, tuple[Any, tuple[Any, ...], tuple[frozenset[str], bool] | None]] = {}
# Types copy.copy returns as they are: mongomock's per-field copy of them is the value itself.
_IMMUTABLE = frozenset({str, int, float, bool, type(None)})


def _inclusion_of(fields: Any) -> tuple[frozenset[str], bool] | None:
    """(the top-level fields included, whether _id is kept) of a projection such as {"a": 1, "_id": 0};
    None for every other projection."""
    if not isinstance(fields, dict):
        return None
    items = tuple(fields.items())
    cached = _parsed_projections.get(id(fields))
    if cached is not None and cached[0] is fields and cached[1] == items:
        return cached[2]
    inclusion = _parsed_inclusion(items)
    if len(_parsed_projections) >= 16:
        _parsed_projections.pop(next(iter(_parsed_projections)))
    _parsed_projections[id(fields)] = (fields, items, inclusion)
    return inclusion


def _parsed_inclusion(items: tuple[Any, ...]) -> tuple[frozenset[str], bool] | None:
    """What _inclusion_of makes of a projection's items: each value 0 or 1 (an int or a bool), every field but
    _id included (1) and a text without a dot that is no operator, at least one of them; None otherwise."""
    included, keep_id = set(), True
    for key, value in items:
        if type(value) not in (int, bool) or value not in (0, 1):
            return None
        if key == "_id":
            keep_id = value == 1
        elif not value or not isinstance(key, str) or "." in key or key.startswith("$"):
            return None
        else:
            included.add(key)
    return (frozenset(included), keep_id) if included else None


def _copy_only_included_fields(self: Any, doc: dict[str, Any], fields: Any, container: Any) -> Any:
    inclusion = _inclusion_of(fields)
    if inclusion is None:
        return _PLAIN_COPY_ONLY_FIELDS(self, doc, fields, container)
    included, keep_id = inclusion
    projected = container()
    for key, value in doc.items():
        if key in included:
            projected[key] = value if type(value) in _IMMUTABLE else mongomock_collection._copy_field(value, container)
    if keep_id and "_id" in doc:
        projected["_id"] = doc["_id"]
    return projected


def speedups_enabled() -> bool:
    return os.environ.get(SPEEDUPS_VARIABLE, "1") != "0"


def installed_mongomock_version() -> str | None:
    """The version of the installed mongomock, as its distribution's metadata gives it (None: no metadata)."""
    try:
        return importlib.metadata.version("mongomock")
    except importlib.metadata.PackageNotFoundError:
        return None


def patch_mongomock() -> bool:
    """On the proven mongomock version: make mongomock's bulk builder accept pymongo's sort=None and, unless
    DRS_MONGOMOCK_SPEEDUPS=0, read cursors and evaluate $in in linear time, judge simple filters and apply
    simple projections directly (idempotent); True. On any other version: apply nothing, warn (once per
    process), False."""
    installed = installed_mongomock_version()
    if installed != PROVEN_MONGOMOCK_VERSION:
        _report_unproven_version(installed)
        return False
    _apply_patches()
    return True


def _report_unproven_version(installed: str | None) -> None:
    global _unproven_version_reported
    if _unproven_version_reported:
        return
    _unproven_version_reported = True
    log.warning("mongomock %s is installed, but the adaptations of embedded/mongomock_compat.py were proven on "
                "mongomock %s only: the embedded engine runs plain mongomock, without them (bulk writes of "
                "UpdateOne or ReplaceOne may fail, large reads are slower); install mongomock==%s as "
                "requirements.txt pins it", installed or "(version unknown)", PROVEN_MONGOMOCK_VERSION,
                PROVEN_MONGOMOCK_VERSION)


def _apply_patches() -> None:
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
        _iter_documents_judging_simple_conditions if speedups else _PLAIN_ITER_DOCUMENTS)
    mongomock_collection.Collection._copy_only_fields = (  # type: ignore[method-assign]
        _copy_only_included_fields if speedups else _PLAIN_COPY_ONLY_FIELDS)


def _documents_of(store: Any) -> list[dict[str, Any]]:
    """The documents of a mongomock store, as its `documents` property gives them. They are read from the
    dict under its OrderedDict: the same documents in the same order (mongomock adds, replaces and deletes
    them but never reorders them), without the OrderedDict's lookup of every key, which hashes each ObjectId
    in Python (half the time of a scan of 100,000 documents)."""
    store._remove_expired_documents()
    with store._rwlock.reader():
        return list(dict.values(store._documents))


def stored_documents(collection: Any) -> Iterator[dict[str, Any]]:
    """The documents mongomock holds for `collection`, as they are: no query, no copy."""
    yield from _documents_of(collection._store)


def stored_count(collection: Any) -> int:
    """How many documents mongomock holds for `collection` (no query)."""
    return len(collection._store._documents)


def store_documents(collection: Any, documents: Iterable[dict[str, Any]]) -> None:
    """Put documents read from the embedded data file into `collection` as mongomock keeps them. They were
    validated when they were first inserted, and saved by stored_documents, so they are not checked again."""
    store = collection._store
    store.create()
    with store._rwlock.writer():
        for document in documents:
            key = document["_id"]
            store._documents[helpers.hashdict(key) if isinstance(key, dict) else key] = document

