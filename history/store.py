"""The run history in the database (DRS_Amend.Run_History): recording a run, reading the runs back as
validated records (history/records.py), and keeping the collection to its retention."""

from collections.abc import Sequence
from datetime import datetime, timedelta

from amend_store import RUN_HISTORY_COLLECTION, AmendStore
from history.records import History, RunRecord, read_history
from utils.documents import Document


def fetch_history(store: AmendStore, now: datetime, allowance: timedelta, since: datetime | None = None,
                  until: datetime | None = None, limit: int | None = None) -> History:
    """Recorded runs, newest first, started within [since, until) when given (at most `limit` documents),
    read defensively: a malformed document (no started_dtm that is a date included) or one dated after
    now + `allowance` is set apart and counted, never returned as a run."""
    started: dict[str, datetime] = {}
    if since is not None:
        started["$gte"] = since
    if until is not None:
        started["$lt"] = until
    # A document without a date to start is no run, but must still be seen (and counted) in any period.
    query = {"$or": [{"started_dtm": started}, {"started_dtm": {"$not": {"$type": "date"}}}]} if started else {}

    def read() -> list[Document]:
        cursor = store[RUN_HISTORY_COLLECTION].find(query).sort("started_dtm", -1)
        return list(cursor.limit(limit) if limit else cursor)
    return read_history(store.read("reading the run history", read), now, allowance)


def fetch_last_successful_run(store: AmendStore, now: datetime, allowance: timedelta) -> RunRecord | None:
    """The newest well-formed run that ended with exit code 0 by now + `allowance`, or None. A malformed or
    future-dated record is passed over: it is never evidence that the job is healthy."""
    def read() -> RunRecord | None:
        for document in store[RUN_HISTORY_COLLECTION].find({"exit_code": 0}).sort("started_dtm", -1):
            history = read_history([document], now, allowance)
            if history.runs:
                return history.runs[0]
        return None
    return store.read("reading the last successful run", read)


def record_run(store: AmendStore, document: Document) -> None:
    """One execution record per run of main.py."""
    store.write("recording the run", lambda: store[RUN_HISTORY_COLLECTION].insert_one(document))


def add_runs(store: AmendStore, runs: Sequence[Document]) -> None:
    """Generated runs into the run history (database_update.py --generate-history)."""
    store.write(f"adding {len(runs)} run(s) to the run history", lambda: store[RUN_HISTORY_COLLECTION].insert_many(
        runs))


RETENTION_INDEX = "run_retention"
RETENTION_KEYS = [("ended_dtm", 1)]  # its keys: a run expires by when it ended


def keep_history_within(store: AmendStore, days: int | None, now: datetime, ttl_index: bool) -> int:
    """Keep DRS_Amend.Run_History to the runs that ended in the last `days` (all of them when None).

    With `ttl_index` (a server), a TTL index on ended_dtm does it: created, replaced when its
    period changed, dropped when no period is set. Otherwise (the embedded default, whose
    engine expires nothing on its own between runs) the older runs are deleted now. The number
    of runs deleted."""
    history = store[RUN_HISTORY_COLLECTION]
    if not ttl_index:
        if days is None:
            return 0
        return int(store.write("pruning the run history", lambda: history.delete_many(
            {"ended_dtm": {"$lt": now - timedelta(days=days)}})).deleted_count)
    index = store.read("reading the run history's indexes", history.index_information).get(RETENTION_INDEX)
    seconds = None if days is None else days * 86_400
    if index is not None and index.get("expireAfterSeconds") != seconds:
        store.write("dropping the run history's retention index", lambda: history.drop_index(RETENTION_INDEX))
    if seconds is not None and (index is None or index.get("expireAfterSeconds") != seconds):
        store.write("creating the run history's retention index", lambda: history.create_index(
            RETENTION_KEYS, name=RETENTION_INDEX, expireAfterSeconds=seconds))
    return 0
