"""A light stand-in of the cases collection, for the benchmarks only: one batch's cases in a dict, just the
reads and writes the job sends to the cases collection, so that a 100,000-case task runs in seconds.

It reads the filter and the update of each pymongo UpdateMany it is sent through their private attributes
(`_filter`, `_doc`): pymongo offers no public accessor. No test uses it; the tests count commands on
mongomock (tests/test_command_counts.py).
"""

from collections.abc import Iterator
from typing import Any

from pymongo.results import BulkWriteResult

from amend_store import CASES_COLLECTION, FENCE_FIELD


class LightCasesCollection:
    """The cases of one batch keyed by Case_Id; supports the job's filters, projections and updates
    (the fencing condition included)."""

    name = CASES_COLLECTION

    def __init__(self, documents: Any):
        self.documents = {document["Case_Id"]: dict(document) for document in documents}

    def _select(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        batch_id = query["Case_Distribution_Batch_ID"]
        case_filter = query.get("Case_Id")
        fence = query.get(FENCE_FIELD, {}).get("$not", {}).get("$gt")
        candidates = (self.documents.get(case_id) for case_id in case_filter["$in"]) if case_filter \
            else self.documents.values()
        return [d for d in candidates if d is not None and d["Case_Distribution_Batch_ID"] == batch_id
                and (fence is None or d.get(FENCE_FIELD, fence) <= fence)]

    def find(self, query: dict[str, Any], projection: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        fields = [name for name, shown in (projection or {}).items() if shown and name != "_id"]
        for document in self._select(query):
            yield {name: document[name] for name in fields if name in document} if fields else dict(document)

    def bulk_write(self, requests: list[Any], ordered: bool = True) -> BulkWriteResult:
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
