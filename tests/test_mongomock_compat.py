"""The mongomock adaptation of embedded/mongomock_compat.py (upstream issue mongomock#912) and its speedups,
which must give plain mongomock's answers."""

import copy
import os
from contextlib import contextmanager
from functools import partial

import mongomock
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymongo import ReplaceOne, UpdateOne

from embedded.mongomock_compat import SPEEDUPS_VARIABLE, patch_mongomock, speedups_enabled


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
