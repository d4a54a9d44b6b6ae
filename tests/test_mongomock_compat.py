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


# --- the patches apply to the proven mongomock version only ---------------------------------------


def mongomock_state():
    """Everything patch_mongomock may replace in mongomock, as it is now."""
    return (BulkOperationBuilder.add_update, BulkOperationBuilder.add_replace, Cursor.__next__, Cursor.next,
            filtering._in_op, filtering._filterer_inst._operator_map["$in"], Collection._iter_documents,
            Collection._copy_only_fields)


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
               mongomock_compat._iter_documents_judging_simple_conditions, mongomock_compat._copy_only_included_fields]
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
