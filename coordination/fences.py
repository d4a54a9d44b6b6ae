"""Fencing tokens (see docs/design.md, "Fencing"): a counter in the database, incremented atomically, and
the filter condition every fenced write adds, so that a run whose journal was taken over writes nothing."""

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from amend_store import COUNTERS_COLLECTION, FENCE_FIELD, AmendStore
from utils.Custom_Exceptions import DatabaseUpdateError
from utils.documents import Document

FENCE_COUNTER_ID = "fence"


def not_newer_than(fence: int) -> Document:
    """Matches a document that no writer with a newer fencing token has written."""
    return {FENCE_FIELD: {"$not": {"$gt": fence}}}


def issue_fence(store: AmendStore) -> int:
    """A new fencing token: the database's counter, incremented atomically (never reused, never lower)."""
    def increment() -> int:
        for _ in range(2):
            try:
                counter = store[COUNTERS_COLLECTION].find_one_and_update(
                    {"_id": FENCE_COUNTER_ID}, {"$inc": {"value": 1}}, upsert=True,
                    return_document=ReturnDocument.AFTER)
                return int(counter["value"])
            except DuplicateKeyError:
                continue  # two first-ever upserts raced; the counter exists now
        raise DatabaseUpdateError("issuing a fencing token failed: the counter could not be created")
    return store.write("issuing a fencing token", increment)
