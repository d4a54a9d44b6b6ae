"""Counting the database commands of a run, and a light stand-in for a large cases collection.

CountingDatabase records one entry per command a pymongo call sends (a cursor's getMore
batches are not counted: `find` counts once). LightCasesCollection holds a batch's cases in
a dict and implements just the reads and writes the job sends to the cases collection, so
that a 100,000-case task runs in seconds where mongomock needs many minutes.
"""

from pymongo.results import BulkWriteResult

from utils.connectDB import CASES_COLLECTION

READ_METHODS = frozenset({"find", "find_one", "count_documents"})
WRITE_METHODS = frozenset({"find_one_and_update", "update_one", "update_many", "bulk_write", "replace_one",
                           "delete_one", "delete_many", "insert_one", "insert_many"})


def documents_touched(method, result):
    """How many documents a write command wrote (matched, upserted, inserted or deleted)."""
    if method == "bulk_write":
        return result.matched_count + result.upserted_count + result.inserted_count + result.deleted_count
    if method in ("update_one", "update_many", "replace_one"):
        return result.matched_count + (1 if result.upserted_id is not None else 0)
    if method in ("delete_one", "delete_many"):
        return result.deleted_count
    if method == "insert_many":
        return len(result.inserted_ids)
    return 0 if result is None else 1


class CountingCollection:
    def __init__(self, collection, log, written):
        self._collection = collection
        self._log = log
        self._written = written

    @property
    def name(self):
        return self._collection.name

    def __getattr__(self, attribute):
        method = getattr(self._collection, attribute)
        if attribute not in READ_METHODS | WRITE_METHODS:
            return method

        def counted(*args, **kwargs):
            self._log.append((self._collection.name, attribute))
            result = method(*args, **kwargs)
            if attribute in WRITE_METHODS:
                self._written.append(documents_touched(attribute, result))
            else:
                self._written.append(0)
            return result
        return counted


class CountingDatabase:
    def __init__(self, database, replacements=None):
        self._database = database
        self._replacements = replacements or {}
        self.commands = []
        self.written = []

    def __getitem__(self, name):
        return CountingCollection(self._replacements.get(name) or self._database[name], self.commands, self.written)

    def _first_claim(self):
        return self.commands.index(("System_tasks", "find_one_and_update"))

    def commands_of_first_task(self):
        """The commands from the first claim to the end of the run."""
        return self.commands[self._first_claim():]

    def documents_written_by_first_task(self):
        return sum(self.written[self._first_claim():])


class LightCasesCollection:
    """The cases of one batch keyed by Case_Id; supports the job's filters, projections and updates."""

    name = CASES_COLLECTION

    def __init__(self, documents):
        self.documents = {document["Case_Id"]: dict(document) for document in documents}

    def _select(self, query):
        batch_id = query["Case_Distribution_Batch_ID"]
        case_filter = query.get("Case_Id")
        candidates = (self.documents.get(case_id) for case_id in case_filter["$in"]) if case_filter \
            else self.documents.values()
        return [d for d in candidates if d is not None and d["Case_Distribution_Batch_ID"] == batch_id]

    def find(self, query, projection=None):
        fields = [name for name, shown in (projection or {}).items() if shown and name != "_id"]
        for document in self._select(query):
            yield {name: document[name] for name in fields if name in document} if fields else dict(document)

    def bulk_write(self, requests, ordered=True):
        matched = 0
        for request in requests:
            update = request._doc
            for document in self._select(request._filter):
                matched += 1
                document.update(update.get("$set", {}))
                for name in update.get("$unset", {}):
                    document.pop(name, None)
        return BulkWriteResult({"nMatched": matched, "nModified": matched, "nUpserted": 0, "nInserted": 0,
                                "nRemoved": 0, "upserted": []}, acknowledged=True)
