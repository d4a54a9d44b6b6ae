"""Counting the database commands of a run, and a light stand-in for a large cases collection.

CountingDatabase records one entry per command a pymongo call sends (a cursor's getMore
batches are not counted: `find` counts once). LightCasesCollection holds a batch's cases in
a dict and implements just the reads and writes the job sends to the cases collection, so
that a 100,000-case task runs in seconds where mongomock needs many minutes.
"""

from pymongo.results import BulkWriteResult

from utils.connectDB import CASES_COLLECTION

COMMAND_METHODS = frozenset({"find", "find_one", "find_one_and_update", "update_one", "update_many", "bulk_write",
                             "replace_one", "delete_one", "delete_many", "insert_one", "insert_many",
                             "count_documents"})


class CountingCollection:
    def __init__(self, collection, log):
        self._collection = collection
        self._log = log

    @property
    def name(self):
        return self._collection.name

    def __getattr__(self, attribute):
        method = getattr(self._collection, attribute)
        if attribute not in COMMAND_METHODS:
            return method

        def counted(*args, **kwargs):
            self._log.append((self._collection.name, attribute))
            return method(*args, **kwargs)
        return counted


class CountingDatabase:
    def __init__(self, database, replacements=None):
        self._database = database
        self._replacements = replacements or {}
        self.commands = []

    def __getitem__(self, name):
        return CountingCollection(self._replacements.get(name) or self._database[name], self.commands)

    def commands_of_first_task(self):
        """The commands from the first claim to the end of the run."""
        claim = self.commands.index(("System_tasks", "find_one_and_update"))
        return self.commands[claim:]


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
