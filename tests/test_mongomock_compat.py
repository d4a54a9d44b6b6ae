"""The mongomock adaptation of embedded/mongomock_compat.py (upstream issue mongomock#912) and its speedups,
which must give plain mongomock's answers."""

import copy
import importlib.metadata
import inspect
import logging
import os
import re
from contextlib import contextmanager
from functools import partial

import mongomock
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mongomock import filtering
from mongomock.collection import BulkOperationBuilder, Collection, Cursor
from mongomock.store import CollectionStore
from pymongo import ReplaceOne, UpdateOne

from embedded import mongomock_compat
from embedded.mongomock_compat import PROVEN_MONGOMOCK_VERSION, SPEEDUPS_VARIABLE, patch_mongomock, speedups_enabled
from tests.support import PROJECT_ROOT


def test_bulk_write_takes_update_one_and_replace_one_under_current_pymongo():
    patch_mongomock()
    patch_mongomock()  # idempotent
    collection = mongomock.MongoClient()["db"]["c"]
    collection.insert_many([{"_id": 1, "x": 1}, {"_id": 2, "x": 2}])
    result = collection.bulk_write([UpdateOne({"_id": 1}, {"$set": {"x": 10}}), ReplaceOne({"_id": 2}, {"y": 20}),
                                    UpdateOne({"_id": 3}, {"$set": {"x": 30}}, upsert=True)])
    assert (result.matched_count, result.upserted_count) == (2, 1)
    assert list(collection.find().sort("_id")) == [{"_id": 1, "x": 10}, {"_id": 2, "y": 20}, {"_id": 3, "x": 30}]


def test_a_sort_mongomock_cannot_honour_is_refused():
    patch_mongomock()
    collection = mongomock.MongoClient()["db"]["c"]
    with pytest.raises(NotImplementedError, match="sort option"):
        collection.bulk_write([UpdateOne({}, {"$set": {"x": 1}}, sort={"_id": -1})])


# --- the speedups give mongomock's own answers ------------------------------------------------


@contextmanager
def speedups(enabled):
    """mongomock with or without the speedups for the time of the block, as the environment had it after."""
    previous = os.environ.get(SPEEDUPS_VARIABLE)
    os.environ[SPEEDUPS_VARIABLE] = "1" if enabled else "0"
    patch_mongomock()
    try:
        yield
    finally:
        if previous is None:
            del os.environ[SPEEDUPS_VARIABLE]
        else:
            os.environ[SPEEDUPS_VARIABLE] = previous
        patch_mongomock()


scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(-3, 3, allow_nan=False),
                    st.sampled_from(["a", "b", "c"]))
values = st.one_of(scalars, st.lists(scalars, max_size=3), st.fixed_dictionaries({"x": scalars}))
documents = st.lists(st.fixed_dictionaries({"k": values, "j": scalars}), max_size=25)
in_lists = st.lists(st.one_of(scalars, st.lists(scalars, max_size=2)), max_size=6)


projections = st.one_of(st.none(), st.dictionaries(
    st.sampled_from(["_id", "k", "j", "k.x", "absent", "$", "$k"]),
    st.one_of(st.sampled_from([0, 1, True, False, 2, -1, 1.0, "1"]), st.just({"$slice": 1})), max_size=4))


def ordered(document):
    """A document with its key order made visible (dict equality ignores it)."""
    if isinstance(document, dict):
        return [(key, ordered(value)) for key, value in document.items()]
    if isinstance(document, list):
        return [ordered(value) for value in document]
    return document


def answer(read):
    """What a read returns, its documents' key order included, or the class of the error it raises."""
    try:
        return ordered(read())
    except Exception as exc:  # noqa: BLE001 - the comparison is of whatever plain mongomock does
        return type(exc)


def answers(filters, docs, skip, limit, projection):
    collection = mongomock.MongoClient()["db"]["c"]
    if docs:
        collection.insert_many([dict(doc, _id=number) for number, doc in enumerate(docs)])
    # Each find is given its own copy of the projection: mongomock changes the one it is given.
    def read(query):
        return list(collection.find(query, copy.deepcopy(projection)).skip(skip).limit(limit))

    return [answer(partial(read, query)) for query in filters] + \
        [collection.count_documents(query) for query in filters]


@settings(max_examples=300, deadline=None)
@given(docs=documents, in_list=in_lists, other=scalars, text=st.sampled_from(["a", "b", "c"]),
       skip=st.integers(0, 5), limit=st.integers(0, 5), projection=projections)
def test_the_speedups_give_the_answers_of_plain_mongomock(docs, in_list, other, text, skip, limit, projection):
    filters = [{"k": {"$in": in_list}}, {"k": {"$in": in_list}, "j": other}, {"k": {"$nin": in_list}},
               {"j": {"$in": in_list}}, {"k.x": {"$in": in_list}}, {}, {"j": text}, {"k": text},
               {"k": text, "j": {"$in": in_list}}, {"j": text, "k": {"$in": in_list}},
               {"k": {"$in": in_list}, "j": {"$in": in_list}}, {"j": text, "k.x": text}, {"j": text, "k": other}]
    with speedups(True):
        assert speedups_enabled()
        fast = answers(filters, docs, skip, limit, projection)
    with speedups(False):
        assert not speedups_enabled()
        plain = answers(filters, docs, skip, limit, projection)
    assert fast == plain


def test_a_top_level_projection_is_applied_as_mongomock_applies_it():
    collection = mongomock.MongoClient()["db"]["c"]
    nested = {"y": [1, {"z": 2}]}
    collection.insert_one({"b": 1, "_id": 7, "a": nested, "c": "kept out"})
    projection = {"a": 1, "b": True}
    (document,) = collection.find({}, projection)
    assert ordered(document) == [("b", 1), ("a", ordered(nested)), ("_id", 7)]
    document["a"]["y"][1]["z"] = 3  # a copy: the stored document is untouched
    assert collection.find_one({}, {"a": 1, "_id": 0}) == {"a": nested}


def test_stored_documents_are_mongomocks_own_in_its_order_after_any_change():
    from bson import ObjectId

    from embedded.mongomock_compat import stored_documents

    collection = mongomock.MongoClient()["db"]["c"]
    ids = [ObjectId() for _ in range(8)]
    collection.insert_many([{"_id": key, "n": number} for number, key in enumerate(ids)])
    collection.delete_one({"_id": ids[2]})
    collection.replace_one({"_id": ids[5]}, {"n": "replaced"})
    collection.update_many({"n": {"$in": [0, 7]}}, {"$set": {"m": 1}})
    collection.insert_one({"_id": ids[2], "n": "back"})
    assert [document["_id"] for document in stored_documents(collection)] == \
        [document["_id"] for document in collection._store.documents] == ids[:2] + ids[3:] + ids[2:3]
    assert list(stored_documents(collection)) == list(collection.find())


@pytest.mark.parametrize("enabled", [True, False])
def test_an_in_list_changed_between_queries_is_read_anew(enabled):
    with speedups(enabled):
        collection = mongomock.MongoClient()["db"]["c"]
        collection.insert_many([{"_id": number, "k": number} for number in range(5)])
        ids = [1]

        def found():
            return [[document["_id"] for document in collection.find(query)]
                    for query in ({"k": {"$in": ids}}, {"$or": [{"k": {"$in": ids}}]})] + \
                [collection.count_documents({"k": {"$in": ids}})]

        assert found() == [[1], [1], 1]
        ids[0] = 3  # the same list, the same length, another value
        assert found() == [[3], [3], 1]
        ids.append(4)
        assert found() == [[3, 4], [3, 4], 2]
        assert ids == [3, 4]  # the caller's list is left as it was


@pytest.mark.parametrize("enabled", [True, False])
def test_documents_past_a_ttl_index_are_expired_with_or_without_the_speedups(enabled):
    from datetime import datetime, timedelta

    from embedded.mongomock_compat import store_documents, stored_documents

    with speedups(enabled):
        now = datetime.utcnow()
        documents = [{"_id": 1, "k": "a", "at": now - timedelta(hours=1)}, {"_id": 2, "k": "a", "at": now}]
        for read in (lambda c: [document["_id"] for document in stored_documents(c)],  # what a save writes
                     lambda c: [document["_id"] for document in c.find({"k": "a"})],
                     lambda c: [document["_id"] for document in c.find({"k": {"$in": ["a"]}})]):
            collection = mongomock.MongoClient()["db"]["c"]
            collection.create_index("at", expireAfterSeconds=60)
            store_documents(collection, [dict(document) for document in documents])  # as the data file is loaded
            assert read(collection) == [2]


def test_a_cursor_is_read_in_linear_time_and_sliced_as_before():
    collection = mongomock.MongoClient()["db"]["c"]
    collection.insert_many([{"_id": number} for number in range(50)])
    assert [doc["_id"] for doc in collection.find().skip(45)] == [45, 46, 47, 48, 49]
    assert [doc["_id"] for doc in collection.find().skip(3).limit(2)] == [3, 4]
    assert [doc["_id"] for doc in collection.find().limit(-2)] == [0, 1]
    assert list(collection.find().skip(60)) == []


def test_patching_again_wraps_nothing_twice():
    from mongomock.collection import BulkOperationBuilder

    patch_mongomock()
    wrapped = BulkOperationBuilder.add_update
    for _ in range(3):
        patch_mongomock()
    assert BulkOperationBuilder.add_update is wrapped


# --- speedup 6: the cases' fields indexed, never stale -----------------------------------------------

BATCH, CASE = mongomock_compat.INDEXED_FIELDS
# Mostly plain values (indexed) from a few, so that documents meet; sometimes values the index leaves to
# mongomock (True == 1, 1.0 == 1, an array holds 1, a document), or none.
plain_values = st.sampled_from([0, 1, 2, "1", "A"])
indexed_values = st.one_of(plain_values, plain_values, plain_values,
                           st.sampled_from([None, True, 1.0, [1, 2], {"x": 1}]))
case_documents = st.one_of(
    st.fixed_dictionaries({BATCH: plain_values, CASE: plain_values}, optional={"x": st.integers(0, 3),
                                                                               "y": indexed_values}),
    st.fixed_dictionaries({}, optional={BATCH: indexed_values, CASE: indexed_values, "x": st.integers(0, 3),
                                        "y": indexed_values}))
indexed_filters = st.one_of(
    st.fixed_dictionaries({BATCH: plain_values}), st.fixed_dictionaries({CASE: plain_values}),
    st.fixed_dictionaries({CASE: st.fixed_dictionaries({"$in": st.lists(plain_values, max_size=4)})}),
    st.fixed_dictionaries({BATCH: plain_values, CASE: st.fixed_dictionaries({"$in": st.lists(plain_values)})}),
    st.fixed_dictionaries({BATCH: plain_values, CASE: plain_values, "x": st.just({"$not": {"$gt": 1}})}),
    st.fixed_dictionaries({"$or": st.just([{"x": 1}, {"x": 2}]), CASE: st.fixed_dictionaries(
        {"$in": st.lists(plain_values, max_size=4)})}))
updates = st.one_of(
    st.builds(lambda field, value: {"$set": {field: value}}, st.sampled_from([BATCH, CASE, "x", "y"]), indexed_values),
    st.builds(lambda field: {"$unset": {field: ""}}, st.sampled_from([BATCH, CASE, "x"])),
    st.builds(lambda field: {"$inc": {field: 1}}, st.sampled_from([CASE, "x"])),
    st.builds(lambda source, target: {"$rename": {source: target}}, st.sampled_from([CASE, "y"]),
              st.sampled_from([CASE, "y", "z"])),
    st.builds(lambda value: {"$set": {"x": value}, "$setOnInsert": {"y": 1}}, st.integers(0, 3)))


def normalised(answer_or_error):
    """An answer with the ObjectIds of upserts (new in each run) made equal."""
    from bson import ObjectId

    if isinstance(answer_or_error, list):
        return [normalised(item) for item in answer_or_error]
    if isinstance(answer_or_error, tuple):
        return tuple(normalised(item) for item in answer_or_error)
    return "an ObjectId" if isinstance(answer_or_error, ObjectId) else answer_or_error


def written(result):
    return [getattr(result, name, None) for name in ("matched_count", "modified_count", "upserted_id",
                                                     "deleted_count", "inserted_id", "inserted_ids")]


def bulk_requests(data, filter_of):
    from pymongo import DeleteOne, InsertOne, UpdateMany

    return [data.draw(st.sampled_from([
        UpdateMany(filter_of(), data.draw(updates), upsert=data.draw(st.booleans())),
        UpdateOne(filter_of(), data.draw(updates)), ReplaceOne(filter_of(), data.draw(case_documents)),
        DeleteOne(filter_of()), InsertOne(data.draw(case_documents))])) for _ in range(data.draw(st.integers(1, 3)))]


def random_operation(data):
    """One operation on a collection, drawn (all of it, now): a write of any kind or an indexed query; called with
    the collection, it returns what a caller sees of it."""
    from embedded.mongomock_compat import store_documents

    def filter_of():
        return copy.deepcopy(data.draw(indexed_filters))

    kind = data.draw(st.sampled_from(["find", "count", "find_one", "insert", "update_one", "update_many",
                                      "replace", "delete", "bulk", "find_one_and_update", "fill", "drop"]))
    query, update, document = filter_of(), data.draw(updates), data.draw(case_documents)
    upsert = data.draw(st.booleans())
    documents = data.draw(st.lists(case_documents, max_size=3))
    requests = bulk_requests(data, filter_of) if kind == "bulk" else []
    operations = {
        "find": lambda c: list(c.find(query)), "count": lambda c: c.count_documents(query),
        "find_one": lambda c: c.find_one(query, {"_id": 0}),
        "insert": lambda c: written(c.insert_many(copy.deepcopy(documents or [document]))),
        "update_one": lambda c: written(c.update_one(query, update, upsert=upsert)),
        "update_many": lambda c: written(c.update_many(query, update, upsert=upsert)),
        "replace": lambda c: written(c.replace_one(query, copy.deepcopy(document), upsert=upsert)),
        "delete": lambda c: written(c.delete_many(query) if upsert else c.delete_one(query)),
        "bulk": lambda c: c.bulk_write(copy.deepcopy(requests)).bulk_api_result,
        "find_one_and_update": lambda c: c.find_one_and_update(query, update, upsert=upsert),
        "fill": lambda c: store_documents(c, [dict(copy.deepcopy(document), _id=f"filled {number}")
                                              for number, document in enumerate(documents)]),
        "drop": lambda c: c.drop()}
    return operations[kind]


# Queries made after each operation, so that each write is looked at through an index made before it.
PROBES = [{CASE: value} for value in (0, 1, 2, "1", "A")] + [{BATCH: value} for value in ("A", 0, "1")] + \
    [{BATCH: "A", CASE: {"$in": [0, 1]}}]


def answers_of(operations, indexes):
    collection = mongomock.MongoClient()["db"]["c"]
    for keys, unique in indexes:
        collection.create_index(keys, unique=unique)
    return [(normalised(answer(partial(operation, collection))),
             [normalised(answer(lambda probe=probe: list(collection.find(probe, {"_id": 0})))) for probe in PROBES])
            for operation in operations]


@settings(max_examples=150, deadline=None)
@given(data=st.data(), unique=st.sampled_from([None, CASE, "x"]))
def test_indexed_queries_give_the_answers_of_plain_mongomock_through_any_writes(data, unique):
    """Random writes of every kind (inserts, updates of the indexed fields or of others, upserts, replacements,
    deletes, bulk writes, direct fills, drops, updates a unique index undoes) interleaved with queries the index
    answers."""
    operations = [random_operation(data) for _ in range(data.draw(st.integers(1, 10)))]
    indexes = [([(unique, 1)], True)] if unique else []
    with speedups(True):
        fast = answers_of(operations, indexes)
    with speedups(False):
        plain = answers_of(operations, indexes)
    assert fast == plain


def collection_of_cases():
    collection = mongomock.MongoClient()["db"]["c"]
    collection.insert_many([{"_id": number, BATCH: "A", CASE: number, "y": 10 + number} for number in range(4)])
    return collection


def kept(index):
    """A copy of an index as it is now: its positions, over the same documents."""
    copied = copy.copy(index)
    copied.in_order, copied.by_value, copied.unindexed = \
        list(index.in_order), copy.deepcopy(index.by_value), copy.deepcopy(index.unindexed)
    return copied


def restored(collection, index):
    """An index kept before some writes, put back as if no write had come since."""
    tracking = mongomock_compat._tracking(collection._store)
    tracking.index, index.writes = index, tracking.writes


def rolled_back_update(collection):
    """An update mongomock undoes: the second document it sets meets the first on a unique index."""
    from pymongo.errors import DuplicateKeyError

    collection.create_index("y", unique=True)
    with pytest.raises(DuplicateKeyError):
        collection.update_many({}, {"$set": {"y": 0}})


# Each kind of write, and a query whose answer a stale index would get wrong.
WRITES = {
    "insert": (lambda c: c.insert_one({BATCH: "A", CASE: 7}), {CASE: 7}),
    "$set of the case id": (lambda c: c.update_one({CASE: 1}, {"$set": {CASE: 7}}), {CASE: 7}),
    "$set of the batch": (lambda c: c.update_many({CASE: {"$in": [1, 2]}}, {"$set": {BATCH: "B"}}), {BATCH: "A"}),
    "$unset": (lambda c: c.update_one({CASE: 1}, {"$unset": {CASE: ""}}), {CASE: 1}),
    "$inc": (lambda c: c.update_one({CASE: 1}, {"$inc": {CASE: 6}}), {CASE: 7}),
    "$rename away": (lambda c: c.update_one({CASE: 1}, {"$rename": {CASE: "z"}}), {CASE: 1}),
    "$rename onto": (lambda c: c.update_one({CASE: 1}, {"$rename": {"y": CASE}}), {CASE: 11}),
    "replace": (lambda c: c.replace_one({CASE: 1}, {BATCH: "A", CASE: 7}), {CASE: 7}),
    "pipeline update": (lambda c: c.update_one({CASE: 1}, [{"$set": {CASE: 7}}]), {CASE: 7}),
    "upsert": (lambda c: c.update_one({CASE: 7}, {"$set": {"x": 1}}, upsert=True), {CASE: 7}),
    "bulk UpdateMany": (lambda c: c.bulk_write([UpdateOne({CASE: 1}, {"$set": {CASE: 7}})]), {CASE: 7}),
    "find_one_and_update": (lambda c: c.find_one_and_update({CASE: 1}, {"$set": {CASE: 7}}), {CASE: 7}),
    "rolled back update": (rolled_back_update, {CASE: 1}),
    "delete": (lambda c: c.delete_one({CASE: 1}), {CASE: 1}),
    "drop": (lambda c: (c.drop(), c.insert_one({BATCH: "A", CASE: 7})), {BATCH: "A"}),
    "direct fill": (lambda c: mongomock_compat.store_documents(c, [{"_id": 9, BATCH: "A", CASE: 7}]), {CASE: 7}),
}


@pytest.mark.parametrize("write", WRITES)
def test_the_index_follows_each_kind_of_write_which_a_stale_index_would_get_wrong(write):
    write_once, query = WRITES[write]

    def found(stale):
        collection = collection_of_cases()
        assert list(collection.find({BATCH: "A", CASE: {"$in": [0, 1, 2, 3]}}))  # the index is made
        index = kept(mongomock_compat._tracking(collection._store).index) if stale else None
        write_once(collection)
        if stale:
            restored(collection, index)
        return [list(collection.find(query, {"_id": 0})), collection.count_documents(query)]

    with speedups(False):
        plain = found(stale=False)
    with speedups(True):
        assert found(stale=False) == plain
        assert found(stale=True) != plain  # this test sees an index that missed the write


def test_a_document_of_an_in_set_comes_in_the_stores_order_and_the_index_serves_only_the_proven_shapes():
    with speedups(True):
        collection = mongomock.MongoClient()["db"]["c"]
        collection.insert_many([{"_id": number, CASE: 9 - number % 5} for number in range(10)])
        assert [document["_id"] for document in collection.find({CASE: {"$in": [9, 5, 7]}})] == [0, 2, 4, 5, 7, 9]
        assert [mongomock_compat._indexed_lookups(query) for query in (
            {CASE: True}, {CASE: 1.0}, {CASE: None}, {CASE: {"$in": [1, None]}}, {CASE: {"$in": [1, True]}},
            {"x": 1}, {f"{CASE}.x": 1}, {CASE: {"$in": [1], "$nin": [2]}})] == [[]] * 8


@pytest.mark.parametrize("enabled", [True, False])
def test_an_update_that_moves_case_ids_is_checked_against_a_unique_index_as_mongomock_checks_it(enabled):
    """During an update that changes Case_Id no index serves: the unique check it makes after each document sees
    the documents as they are."""
    from pymongo.errors import DuplicateKeyError

    with speedups(enabled):
        collection = collection_of_cases()
        collection.create_index(CASE, unique=True)
        assert collection.count_documents({CASE: 1}) == 1  # the index is made
        with pytest.raises(DuplicateKeyError):  # the first document, moved to 1, meets the second
            collection.update_many({}, {"$inc": {CASE: 1}})
        assert [document[CASE] for document in collection.find({CASE: {"$in": [0, 1, 2, 3, 4]}})] == [0, 1, 2, 3]
        assert collection.count_documents({CASE: 1}) == 1


@pytest.mark.parametrize("write", ["delete", "drop"])
def test_a_write_that_stales_the_index_lets_it_go_with_the_documents_it_holds(write):
    with speedups(True):
        collection = collection_of_cases()
        assert collection.count_documents({BATCH: "A"}) == 4
        WRITES[write][0](collection)
        assert mongomock_compat._tracking(collection._store).index is None


def test_an_update_of_other_fields_keeps_the_index_and_an_insert_extends_it():
    with speedups(True):
        collection = collection_of_cases()
        assert collection.count_documents({BATCH: "A"}) == 4
        index = mongomock_compat._tracking(collection._store).index
        collection.update_many({CASE: {"$in": [1, 2]}}, {"$set": {"NEW_DRC_ID": "D02", "Amend_Status": "Completed"},
                                                          "$unset": {"y": ""}})
        collection.insert_one({"_id": 4, BATCH: "A", CASE: 4})
        assert collection.count_documents({BATCH: "A"}) == 5
        assert mongomock_compat._tracking(collection._store).index is index


# --- the patches apply to the proven mongomock version only ---------------------------------------


def mongomock_state():
    """Everything patch_mongomock may replace in mongomock, as it is now."""
    return (BulkOperationBuilder.add_update, BulkOperationBuilder.add_replace, Cursor.__next__, Cursor.next,
            filtering._in_op, filtering._filterer_inst._operator_map["$in"], Collection._iter_documents,
            Collection._copy_only_fields, Collection._get_dataset, Collection._update, CollectionStore.__setitem__,
            CollectionStore.__delitem__, CollectionStore.drop, Collection._apply_update_document,
            Collection._apply_update_pipeline)


@pytest.fixture
def plain_mongomock(monkeypatch):
    """mongomock without any patch, and no warning given yet in this process, for the time of the test: the
    suite's patches (conftest.py) are put back afterwards, as monkeypatch puts back what it replaced."""
    monkeypatch.setattr(BulkOperationBuilder, "add_update", inspect.unwrap(BulkOperationBuilder.add_update))
    monkeypatch.setattr(BulkOperationBuilder, "add_replace", inspect.unwrap(BulkOperationBuilder.add_replace))
    monkeypatch.setattr(Cursor, "__next__", mongomock_compat._PLAIN_NEXT)
    monkeypatch.setattr(Cursor, "next", mongomock_compat._PLAIN_NEXT)
    monkeypatch.setattr(filtering, "_in_op", mongomock_compat._PLAIN_IN)
    monkeypatch.setitem(filtering._filterer_inst._operator_map, "$in", mongomock_compat._PLAIN_IN)
    monkeypatch.setattr(Collection, "_iter_documents", mongomock_compat._PLAIN_ITER_DOCUMENTS)
    monkeypatch.setattr(Collection, "_copy_only_fields", mongomock_compat._PLAIN_COPY_ONLY_FIELDS)
    monkeypatch.setattr(Collection, "_get_dataset", mongomock_compat._PLAIN_GET_DATASET)
    monkeypatch.setattr(Collection, "_update", mongomock_compat._PLAIN_UPDATE)
    monkeypatch.setattr(CollectionStore, "__setitem__", mongomock_compat._PLAIN_SETITEM)
    monkeypatch.setattr(CollectionStore, "__delitem__", mongomock_compat._PLAIN_DELITEM)
    monkeypatch.setattr(CollectionStore, "drop", mongomock_compat._PLAIN_DROP)
    monkeypatch.setattr(Collection, "_apply_update_document", mongomock_compat._PLAIN_APPLY_UPDATE_DOCUMENT)
    monkeypatch.setattr(Collection, "_apply_update_pipeline", mongomock_compat._PLAIN_APPLY_UPDATE_PIPELINE)
    monkeypatch.setattr(mongomock_compat, "_unproven_version_reported", False)
    monkeypatch.delenv(SPEEDUPS_VARIABLE, raising=False)
    plain = mongomock_state()
    assert "sort" not in inspect.signature(plain[0]).parameters  # mongomock 4.3's own bulk builder
    return plain


def unproven_version_warnings(caplog):
    return [record.getMessage() for record in caplog.records
            if record.name == "drs_amend.embedded" and record.levelno == logging.WARNING]


@pytest.mark.parametrize("installed", ["4.3.1", "4.2.0", "5.0.0", None])
def test_another_mongomock_version_runs_plain_mongomock_and_is_warned_of_once(plain_mongomock, monkeypatch, caplog,
                                                                              installed):
    monkeypatch.setattr(mongomock_compat, "installed_mongomock_version", lambda: installed)
    with caplog.at_level(logging.WARNING, logger="drs_amend.embedded"):
        assert [patch_mongomock() for _ in range(3)] == [False, False, False]
    assert mongomock_state() == plain_mongomock  # nothing applied, not even the adaptation
    (warning,) = unproven_version_warnings(caplog)
    assert f"mongomock {installed or '(version unknown)'} is installed" in warning
    assert f"proven on mongomock {PROVEN_MONGOMOCK_VERSION} only" in warning
    collection = mongomock.MongoClient()["db"]["c"]
    collection.insert_one({"_id": 1, "x": 1})
    with pytest.raises(TypeError, match="sort"):  # mongomock#912, as plain mongomock 4.3 has it
        collection.bulk_write([UpdateOne({"_id": 1}, {"$set": {"x": 2}})])


@pytest.mark.parametrize("enabled", [True, False])
def test_the_proven_mongomock_version_is_patched_without_a_warning(plain_mongomock, monkeypatch, caplog, enabled):
    monkeypatch.setattr(mongomock_compat, "installed_mongomock_version", lambda: PROVEN_MONGOMOCK_VERSION)
    monkeypatch.setenv(SPEEDUPS_VARIABLE, "1" if enabled else "0")
    with caplog.at_level(logging.WARNING, logger="drs_amend.embedded"):
        assert patch_mongomock() is True
    add_update, add_replace, *speedups = mongomock_state()
    assert inspect.unwrap(add_update) is plain_mongomock[0] and inspect.unwrap(add_replace) is plain_mongomock[1]
    assert "sort" in inspect.signature(add_update, follow_wrapped=False).parameters
    patched = [mongomock_compat._next_without_copying, mongomock_compat._next_without_copying,
               mongomock_compat._in_with_a_set, mongomock_compat._in_with_a_set,
               mongomock_compat._iter_documents_judging_simple_conditions, mongomock_compat._copy_only_included_fields,
               mongomock_compat._dataset_projected_at_once, mongomock_compat._update_keeping_the_index,
               mongomock_compat._setitem_keeping_the_index, mongomock_compat._delitem_counted,
               mongomock_compat._drop_counted, mongomock_compat._apply_update_document_noted,
               mongomock_compat._apply_update_pipeline_noted]
    assert speedups == (patched if enabled else list(plain_mongomock[2:]))
    assert unproven_version_warnings(caplog) == []


def test_the_installed_version_is_read_from_the_distributions_metadata(monkeypatch):
    assert mongomock_compat.installed_mongomock_version() == importlib.metadata.version("mongomock")

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    assert mongomock_compat.installed_mongomock_version() is None


@pytest.mark.parametrize("pins", ["requirements.txt", "constraints.txt"])
def test_the_proven_version_is_the_pinned_one(pins):
    """A new mongomock is taken by raising the pin and PROVEN_MONGOMOCK_VERSION together, never one alone."""
    assert re.findall(r"^mongomock==(\S+)", (PROJECT_ROOT / pins).read_text(), re.MULTILINE) == \
        [PROVEN_MONGOMOCK_VERSION]


def test_the_full_read_in_place_builds_the_batch_a_find_builds():
    """The embedded default reads a batch's documents as mongomock holds them (matching_documents, no copy, no
    projection): the same cases, cells and amounts as the find the store sends a server, amended cases and
    another batch's included."""
    from amend_store import CASES_COLLECTION, AmendStore
    from database_checks import fetch_cases_for_batch
    from fixture_generator import BatchShape, generate_batch
    from tests.support import new_database
    from update_databases import reset_collections

    db = new_database()
    reset_collections(AmendStore(db), generate_batch(BatchShape(2_000, seed=7)))
    db[CASES_COLLECTION].update_many({"Case_Id": {"$in": list(range(0, 2_000, 7))}}, {"$set": {"NEW_DRC_ID": "D03"}})
    db[CASES_COLLECTION].insert_one({"Case_Id": 1, "Case_Distribution_Batch_ID": "OTHER", "DRC_Id": "D01",
                                     "RTOM": "CW", "Arrease": 1.0})
    in_place = fetch_cases_for_batch(AmendStore(db, in_place=mongomock_compat.matching_documents), "GEN")
    assert in_place == fetch_cases_for_batch(AmendStore(db), "GEN")
    stored = list(mongomock_compat.matching_documents(db[CASES_COLLECTION], {"Case_Distribution_Batch_ID": "GEN"}))
    assert [document["_id"] for document in stored] == [
        document["_id"] for document in db[CASES_COLLECTION].find({"Case_Distribution_Batch_ID": "GEN"}, {"_id": 1})]
    assert stored[0] is db[CASES_COLLECTION]._store[stored[0]["_id"]]  # the engine's own document, not a copy
