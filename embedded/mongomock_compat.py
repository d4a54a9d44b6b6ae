"""mongomock 4.3 as the engine of the embedded default (and of the tests): one adaptation to
pymongo 4.20, five speedups, and direct access to the documents it holds.

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
   order, copied, then `_id` last unless excluded. Any other projection goes to mongomock. A find without a
   sort parses it once for all its documents, not once for each.
6. Speedup: every query on DRS.Tmp_Case_Distribution_DRC scanned the whole collection (1,000,000 cases: the
   92 UpdateMany of a task's case writes took 2.4 s). A top-level condition `{field: value}` or
   `{field: {"$in": values}}` on INDEXED_FIELDS (Case_Distribution_Batch_ID, Case_Id), its values plain int or
   text, is answered from an index of the store: per field, the positions of the documents holding each plain
   value there, and those holding any other value or none (always candidates). The candidates of the most
   selective such condition, in the store's order, are judged on the whole filter as in 4; when that
   condition is the whole filter and every document holds a plain value there, they are the answer (a plain
   int or text equals only itself: a document the index passes over cannot match). The index is never
   stale: each write that may move the documents or their indexed values (an insert, a delete, a drop, a
   fill by store_documents, an update whose operators touch an indexed field, a replacement, a pipeline) is
   counted, and an index serves only while no write came since it was made; an insert, which the store puts
   last, extends it instead. An update whose paths are all other fields (the job's writes) leaves it as it
   is, and while an update that may change an indexed field runs, no index serves (its unique checks query
   the store mid-update). Proven by random interleavings of every kind of write with queries, answered as
   plain mongomock answers them, and by a test per kind of write that an index kept from before it would
   give a wrong answer.

The speedups change no result (the suite passes with and without them; tests compare both
on random data); DRS_MONGOMOCK_SPEEDUPS=0 in the environment leaves them out. mongomock evaluates a filter on
every document, its first one first: the speedups evaluate it on the first one too, so that a filter mongomock
refuses there is refused whichever documents they pass over.

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
as_loaded lets a save write again the bytes a document was loaded from, as long as nothing changed it:
mongomock changes a stored document in place only in its update (_apply_update_document and
_apply_update_pipeline, which the speedups note); an insert, a replacement after a failed update, a fill put
another document in its place, which is encoded. Only while the speedups are applied (they note the changes):
without them every document is encoded. Tests compare the file so saved with the one a save encoding every
document writes, after random writes of every kind.
"""

import dataclasses
import functools
import importlib.metadata
import inspect
import itertools
import logging
import operator
import os
import weakref
from array import array
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from mongomock import collection as mongomock_collection
from mongomock import filtering, helpers
from mongomock.collection import BulkOperationBuilder, Cursor
from mongomock.store import CollectionStore

SPEEDUPS_VARIABLE = "DRS_MONGOMOCK_SPEEDUPS"
# The mongomock release the adaptation and the speedups were proven on: the one requirements.txt pins.
PROVEN_MONGOMOCK_VERSION = "4.3.0"
_PLAIN_NEXT = Cursor.__next__
_PLAIN_IN = filtering._in_op
_PLAIN_ITER_DOCUMENTS = mongomock_collection.Collection._iter_documents
_PLAIN_COPY_ONLY_FIELDS = mongomock_collection.Collection._copy_only_fields
_PLAIN_GET_DATASET = mongomock_collection.Collection._get_dataset
_PLAIN_UPDATE = mongomock_collection.Collection._update
_PLAIN_APPLY_UPDATE_DOCUMENT = mongomock_collection.Collection._apply_update_document
_PLAIN_APPLY_UPDATE_PIPELINE = mongomock_collection.Collection._apply_update_pipeline
_PLAIN_SETITEM = CollectionStore.__setitem__
_PLAIN_DELITEM = CollectionStore.__delitem__
_PLAIN_DROP = CollectionStore.drop

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
    lookups = _indexed_lookups(search_filter)
    if conditions is None and not lookups:
        return _PLAIN_ITER_DOCUMENTS(self, search_filter)
    store = self._store
    if store.is_empty:  # mongomock validates the filter so, when no document can match
        filtering.filter_applies(search_filter, {})
        return iter(())
    # mongomock evaluates the filter on every document, its first one first: what it refuses there is refused here
    # too, whichever documents the index or the judged conditions pass over.
    filtering.filter_applies(search_filter, next(iter(dict.values(store._documents))))
    documents, exact = _candidates(store, search_filter, lookups)
    if exact:
        return iter(documents)
    if conditions is None:
        return (document for document in documents if filtering.filter_applies(search_filter, document))
    return _matching(documents, search_filter, conditions)


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
    return _projected(doc, inclusion, container)


def _dataset_projected_at_once(self: Any, spec: Any, sort: Any, fields: Any, as_class: Any) -> Iterator[Any]:
    """mongomock's _get_dataset (the documents of a find, projected); without a sort, a projection
    _inclusion_of takes is parsed once for all the documents, not once for each."""
    inclusion = None if sort else _inclusion_of(fields)
    if inclusion is None:
        yield from _PLAIN_GET_DATASET(self, spec, sort, fields, as_class)
        return
    yield from map(functools.partial(_projected, inclusion=inclusion, container=as_class), self._iter_documents(spec))


def _projected(doc: dict[str, Any], inclusion: tuple[frozenset[str], bool], container: Any) -> Any:
    """A document projected as mongomock projects it on a projection _inclusion_of took: the included fields in
    the document's order, copied, then _id unless excluded."""
    included, keep_id = inclusion
    projected = container()
    for key, value in doc.items():
        if key in included:
            projected[key] = value if type(value) in _IMMUTABLE else mongomock_collection._copy_field(value, container)
    if keep_id and "_id" in doc:
        projected["_id"] = doc["_id"]
    return projected


# The top-level fields speedup 6 indexes: those the job finds the cases of DRS.Tmp_Case_Distribution_DRC by.
INDEXED_FIELDS = ("Case_Distribution_Batch_ID", "Case_Id")
# The exact types of the values an index holds (bool is left out: True == 1). A document with any other value
# there, or none, is a candidate of every query on the field.
_INDEXED_TYPES = frozenset({int, str})
# Up to this many distinct values in a field are grouped one value at a time, each by one pass of C code.
_FEW_VALUES = 16
# An indexed value -> the position of the one document holding it, or the positions (ascending) of several.
_Positions = dict[Any, int | list[int]]
# The update operators whose fields (and, for $rename, values) are paths: a path whose first part is no
# indexed field changes nothing of the indexed fields.
_PATH_OPERATORS = frozenset({"$set", "$unset", "$inc", "$mul", "$min", "$max", "$currentDate", "$push", "$addToSet",
                             "$pull", "$pullAll", "$pop", "$bit", "$setOnInsert", "$rename"})


class _FieldIndex:
    """Where the documents of a store are by their plain values (_INDEXED_TYPES) of INDEXED_FIELDS, as the store
    was after `writes` writes: `in_order`, its documents in its order (a position is an index into it); per
    field, made at its first query, the positions of the documents holding each value there (`by_value`), and
    those of the documents holding no plain value there (`unindexed`)."""

    def __init__(self, store: Any, writes: int):
        self.writes = writes
        with store._rwlock.reader():
            self.in_order = list(dict.values(store._documents))
        self.by_value: dict[str, _Positions] = {}
        self.unindexed: dict[str, list[int]] = {}

    def add(self, document: dict[str, Any]) -> None:
        """A document the store has just put last (an OrderedDict puts a new key last)."""
        position = len(self.in_order)
        self.in_order.append(document)
        for field, by_value in self.by_value.items():
            _note(by_value, self.unindexed[field], document.get(field, filtering.NOTHING), position)

    def count(self, field: str, values: Iterable[Any]) -> int:
        """How many positions `positions` gives, without making them."""
        by_value, unindexed = self._of_field(field)
        found = (by_value.get(value) for value in values)
        return len(unindexed) + sum(1 if isinstance(held, int) else len(held) for held in found if held is not None)

    def positions(self, field: str, values: Iterable[Any]) -> list[int]:
        """The positions, ascending, of the documents holding one of `values` (plain) in `field`, and of those
        holding no plain value there."""
        by_value, unindexed = self._of_field(field)
        positions = list(unindexed)
        for value in values:
            held = by_value.get(value)
            if isinstance(held, int):
                positions.append(held)
            elif held is not None:
                positions.extend(held)
        positions.sort()
        return positions

    def _of_field(self, field: str) -> tuple[_Positions, list[int]]:
        if field not in self.by_value:
            values = [document.get(field, filtering.NOTHING) for document in self.in_order]
            self.by_value[field], self.unindexed[field] = _grouped(values)
        return self.by_value[field], self.unindexed[field]


def _grouped(values: list[Any]) -> tuple[_Positions, list[int]]:
    """(by_value, unindexed) of a field whose values are `values`, in the store's order. Plain values held once
    each (the case ids) or a few values held many times (the batches) are grouped by C code."""
    if set(map(type, values)) <= _INDEXED_TYPES:
        last_positions = dict(zip(values, range(len(values)), strict=True))
        if len(last_positions) == len(values):
            return last_positions, []
        if len(last_positions) <= _FEW_VALUES:
            everywhere = range(len(values))
            return {value: list(itertools.compress(everywhere, map(operator.eq, values, itertools.repeat(value))))
                    for value in last_positions}, []
    by_value: _Positions = {}
    unindexed: list[int] = []
    for position, value in enumerate(values):
        _note(by_value, unindexed, value, position)
    return by_value, unindexed


def _note(by_value: _Positions, unindexed: list[int], value: Any, position: int) -> None:
    if type(value) not in _INDEXED_TYPES:
        unindexed.append(position)
    elif (held := by_value.get(value)) is None:
        by_value[value] = position
    elif isinstance(held, int):
        by_value[value] = [held, position]
    else:
        held.append(position)


@dataclass
class _Tracking:
    """What speedup 6 knows of one store: the writes it has seen that may move its documents or their indexed
    values (its index serves only while no other came), the updates running that may change indexed values in
    place (no index serves meanwhile), and its index. Also where store_documents took its documents from
    (`loaded`), and which of them an update has changed in place since (their ids, `changed`)."""
    writes: int = 0
    moving_updates: int = 0
    index: _FieldIndex | None = None
    loaded: "_LoadedRecords | None" = None
    changed: set[int] = dataclasses.field(default_factory=set)


_tracked: "weakref.WeakKeyDictionary[Any, _Tracking]" = weakref.WeakKeyDictionary()


def _tracking(store: Any) -> _Tracking:
    tracking = _tracked.get(store)
    if tracking is None:
        tracking = _tracked[store] = _Tracking()
    return tracking


def _index_of(store: Any) -> _FieldIndex | None:
    """The store's index, made anew if a write came since it was made; None while a moving update runs."""
    tracking = _tracking(store)
    if tracking.moving_updates:
        return None
    index = tracking.index
    if index is None or index.writes != tracking.writes:
        index = tracking.index = _FieldIndex(store, tracking.writes)
    return index


def _indexed_lookups(search_filter: Any) -> list[tuple[str, Collection[Any]]]:
    """The conditions of a filter the index answers: {field: plain value} and {field: {"$in": plain values}} on
    INDEXED_FIELDS, as (field, values)."""
    if not isinstance(search_filter, dict):
        return []
    lookups: list[tuple[str, Collection[Any]]] = []
    for field in INDEXED_FIELDS:
        condition = search_filter.get(field, filtering.NOTHING)
        if type(condition) in _INDEXED_TYPES:
            lookups.append((field, (condition,)))
        elif (members := _plain_members(condition)) is not None and \
                all(type(member) in _INDEXED_TYPES for member in members):
            lookups.append((field, members))
    return lookups


def _candidates(store: Any, search_filter: dict[str, Any],
                lookups: list[tuple[str, Collection[Any]]]) -> tuple[list[dict[str, Any]], bool]:
    """The documents the filter may match, in the store's order, and whether they all match: the index's answer
    to its most selective condition, or every document when it has none or no index serves. A plain value
    equals only itself (a document the index passes over cannot match), so when that condition is the whole
    filter and every document holds a plain value there, the index's answer is exact."""
    index = _index_of(store) if lookups else None
    if index is None:
        return _documents_of(store), False
    field, values = min(lookups, key=lambda lookup: index.count(*lookup)) if len(lookups) > 1 else lookups[0]
    documents = list(map(index.in_order.__getitem__, index.positions(field, values)))
    return documents, len(search_filter) == 1 and not index.unindexed[field]


def _invalidate(store: Any) -> _Tracking:
    """Count a write that may move the store's documents or change their indexed values, and let its index go
    (with the documents it holds)."""
    tracking = _tracking(store)
    tracking.writes += 1
    tracking.index = None
    return tracking


def _setitem_keeping_the_index(self: Any, key: Any, document: dict[str, Any]) -> None:
    """mongomock's write of a document into the store (an insert, or the rollback of an update), counted; a new
    document, which the store puts last, is added to an index made before it."""
    tracking = _tracking(self)
    index, writes, size = tracking.index, tracking.writes, len(self._documents)
    _invalidate(self)
    _PLAIN_SETITEM(self, key, document)
    if index is not None and index.writes == writes and len(self._documents) == size + 1:
        index.add(document)
        index.writes = writes + 1
        tracking.index = index


def _delitem_counted(self: Any, key: Any) -> None:
    _invalidate(self)
    _PLAIN_DELITEM(self, key)


def _drop_counted(self: Any) -> None:
    _invalidate(self).loaded = None
    _PLAIN_DROP(self)


def _leaves_indexed_fields(update: Any) -> bool:
    """Whether an update document surely leaves INDEXED_FIELDS as they are: operators on other paths only. A
    replacement, a pipeline, an empty document, any other operator or path is taken to change them."""
    if not isinstance(update, dict) or not update:
        return False
    for update_operator, fields in update.items():
        if update_operator not in _PATH_OPERATORS or not isinstance(fields, dict):
            return False
        paths = [*fields, *fields.values()] if update_operator == "$rename" else list(fields)
        if not all(isinstance(path, str) and path.split(".", 1)[0] not in INDEXED_FIELDS for path in paths):
            return False
    return True


def _update_keeping_the_index(self: Any, spec: Any, document: Any, *args: Any, **kwargs: Any) -> Any:
    """mongomock's update, which changes the stored documents in place: one that may change an indexed field
    counts as a write, and no index is made while it runs (the unique checks it makes query the store)."""
    if _leaves_indexed_fields(document):
        return _PLAIN_UPDATE(self, spec, document, *args, **kwargs)
    tracking = _invalidate(self._store)
    tracking.moving_updates += 1
    try:
        return _PLAIN_UPDATE(self, spec, document, *args, **kwargs)
    finally:
        tracking.moving_updates -= 1


def _apply_update_document_noted(self: Any, existing_document: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
    """mongomock's in-place change of a stored document by an update document, noted for as_loaded."""
    _note_changed(self._store, existing_document)
    return _PLAIN_APPLY_UPDATE_DOCUMENT(self, existing_document, *args, **kwargs)


def _apply_update_pipeline_noted(self: Any, existing_document: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
    """mongomock's in-place change of a stored document by an update pipeline, noted for as_loaded."""
    _note_changed(self._store, existing_document)
    return _PLAIN_APPLY_UPDATE_PIPELINE(self, existing_document, *args, **kwargs)


def _note_changed(store: Any, document: dict[str, Any]) -> None:
    tracking = _tracked.get(store)
    if tracking is not None and tracking.loaded is not None:
        tracking.changed.add(id(document))


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
    simple projections directly, answer the cases' queries from an index and note the updates' changes in
    place (idempotent); True. On any other version: apply nothing, warn (once per
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


# What the speedups replace: (owner, attribute, the speedup's, mongomock's own).
_SPEEDUPS: tuple[tuple[Any, str, Any, Any], ...] = (
    (Cursor, "__next__", _next_without_copying, _PLAIN_NEXT),
    (Cursor, "next", _next_without_copying, _PLAIN_NEXT),
    (filtering, "_in_op", _in_with_a_set, _PLAIN_IN),
    (mongomock_collection.Collection, "_iter_documents", _iter_documents_judging_simple_conditions,
     _PLAIN_ITER_DOCUMENTS),
    (mongomock_collection.Collection, "_copy_only_fields", _copy_only_included_fields, _PLAIN_COPY_ONLY_FIELDS),
    (mongomock_collection.Collection, "_get_dataset", _dataset_projected_at_once, _PLAIN_GET_DATASET),
    (mongomock_collection.Collection, "_update", _update_keeping_the_index, _PLAIN_UPDATE),
    (CollectionStore, "__setitem__", _setitem_keeping_the_index, _PLAIN_SETITEM),
    (CollectionStore, "__delitem__", _delitem_counted, _PLAIN_DELITEM),
    (CollectionStore, "drop", _drop_counted, _PLAIN_DROP),
    (mongomock_collection.Collection, "_apply_update_document", _apply_update_document_noted,
     _PLAIN_APPLY_UPDATE_DOCUMENT),
    (mongomock_collection.Collection, "_apply_update_pipeline", _apply_update_pipeline_noted,
     _PLAIN_APPLY_UPDATE_PIPELINE),
)


def _apply_patches() -> None:
    for name in ("add_update", "add_replace"):
        method = getattr(BulkOperationBuilder, name)
        if "sort" not in inspect.signature(method, follow_wrapped=False).parameters:
            setattr(BulkOperationBuilder, name, _accepting_no_sort(method))
    speedups = speedups_enabled()
    if not (speedups and _changes_noted()):
        _tracked.clear()  # what speedup 6 and as_loaded know may miss the writes made while they were off
    for owner, name, sped_up, plain in _SPEEDUPS:
        setattr(owner, name, sped_up if speedups else plain)
    filtering._filterer_inst._operator_map["$in"] = filtering._in_op


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


def matching_documents(collection: Any, search_filter: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The documents of `collection` that `search_filter` matches, in the store's order, as they are: no copy, no
    projection (for a caller that only reads them, as the job's full read of a batch). Through the index of
    speedup 6 when the speedups are applied; through mongomock's own scan otherwise."""
    return iter(collection._iter_documents(search_filter))


def stored_count(collection: Any) -> int:
    """How many documents mongomock holds for `collection` (no query)."""
    return len(collection._store._documents)


def store_documents(collection: Any, documents: Iterable[dict[str, Any]],
                    loaded_from: tuple[bytes, Sequence[int]] | None = None) -> None:
    """Put documents read from the embedded data file into `collection` as mongomock keeps them. They were
    validated when they were first inserted, and saved by stored_documents, so they are not checked again.
    `loaded_from` (data, offsets): document i was decoded from data[offsets[i]:offsets[i + 1]], which as_loaded
    gives back while no update changes it (only while the speedups, which note those changes, are applied)."""
    store = collection._store
    store.create()
    tracking = _invalidate(store)  # an index of speedup 6 made before is stale
    documents = list(documents)
    with store._rwlock.writer():
        for document in documents:
            key = document["_id"]
            if isinstance(key, dict):  # a projection hands it out as it is (as mongomock does): not kept as loaded
                tracking.changed.add(id(document))
            store._documents[helpers.hashdict(key) if isinstance(key, dict) else key] = document
    if loaded_from is None or not _changes_noted():
        tracking.loaded = None
    else:
        _note_loaded(tracking, documents, *loaded_from)


@dataclass
class _LoadedRecords:
    """The documents store_documents put in a store, in order, and the bytes each was decoded from: document i
    from data[offsets[i]:offsets[i + 1]]."""
    data: bytes
    documents: list[dict[str, Any]]
    offsets: "array[int]"


def _note_loaded(tracking: _Tracking, documents: list[dict[str, Any]], data: bytes, offsets: Sequence[int]) -> None:
    if len(offsets) != len(documents) + 1:
        raise ValueError(f"{len(documents)} document(s) loaded from {len(offsets)} offset(s)")
    loaded = tracking.loaded
    if loaded is None or loaded.data is not data or loaded.offsets[-1] != offsets[0]:  # not the next records
        loaded = tracking.loaded = _LoadedRecords(data, [], array("q", offsets[:1]))
    loaded.documents.extend(documents)
    loaded.offsets.extend(offsets[1:])


def _changes_noted() -> bool:
    """Whether the updates' in-place changes of stored documents are noted (the speedups are applied)."""
    return mongomock_collection.Collection._apply_update_document is _apply_update_document_noted


@dataclass(frozen=True)
class LoadedRun:
    """The bytes `documents` consecutive stored documents were loaded from, none changed since."""
    data: memoryview
    documents: int


def as_loaded(collection: Any, documents: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any] | LoadedRun]:
    """`documents`, the collection's in its order, with each run of consecutive ones still as store_documents
    loaded them (from consecutive bytes) given as a LoadedRun of those bytes. A document is still as loaded
    while no update has changed it in place (noted by the speedups; a replaced one is another document): this
    holds only while the speedups are applied, so without them every document is given as it is."""
    tracking = _tracked.get(collection._store)
    if tracking is None or tracking.loaded is None or not _changes_noted():
        yield from documents
        return
    loaded, changed = tracking.loaded, tracking.changed
    offsets, view, places = loaded.offsets, memoryview(loaded.data), _PlacesInLoad(loaded)
    start = end = count = 0
    for document in documents:
        position = places.of(document)
        if position is None or id(document) in changed:
            if count:
                yield LoadedRun(view[start:end], count)
                count = 0
            yield document
        elif count and offsets[position] == end:
            end, count = offsets[position + 1], count + 1
        else:
            if count:
                yield LoadedRun(view[start:end], count)
            start, end, count = offsets[position], offsets[position + 1], 1
    if count:
        yield LoadedRun(view[start:end], count)


class _PlacesInLoad:
    """Where stored documents are among the loaded ones: usually right after the previous one (a store keeps
    the order it was filled in), else found by identity."""

    def __init__(self, loaded: _LoadedRecords):
        self.documents = loaded.documents
        self.next = 0
        self.by_identity: dict[int, int] | None = None

    def of(self, document: dict[str, Any]) -> int | None:
        position = self.next
        if position >= len(self.documents) or self.documents[position] is not document:
            if self.by_identity is None:
                self.by_identity = {id(loaded): number for number, loaded in enumerate(self.documents)}
            found = self.by_identity.get(id(document))
            if found is None or self.documents[found] is not document:
                return None
            position = found
        self.next = position + 1
        return position
