"""The mongomock adaptation of utils/mongomock_compat.py (upstream issue mongomock#912)."""

import mongomock
import pytest
from pymongo import ReplaceOne, UpdateOne

from utils.mongomock_compat import patch_mongomock


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
