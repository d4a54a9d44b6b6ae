"""mongomock 4.3 under pymongo 4.20: the one adaptation the embedded default and the tests need.

Production never loads this module: it runs plain pymongo against a server.

pymongo 4.11 added a `sort` option to UpdateOne and ReplaceOne and passes it (None unless
set) to the bulk builder; mongomock 4.3's BulkOperationBuilder does not accept the
argument, so every bulk_write holding an UpdateOne or a ReplaceOne fails with a TypeError
(upstream: mongomock issue #912, fix in pull request #933, unmerged). The patch lets
mongomock accept sort=None and refuses any other value, as mongomock does with every
option it cannot honour; the job never sorts those operations. It does nothing once
mongomock accepts `sort` itself.
"""

import functools
import inspect
from collections.abc import Callable
from typing import Any

from mongomock.collection import BulkOperationBuilder


def _accepting_no_sort(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def without_sort(self: Any, *args: Any, sort: object = None, **kwargs: Any) -> Any:
        if sort is not None:
            raise NotImplementedError("mongomock cannot honour the sort option of an UpdateOne or ReplaceOne")
        return method(self, *args, **kwargs)
    return without_sort


def patch_mongomock() -> None:
    """Make mongomock's bulk builder accept pymongo's sort=None (idempotent)."""
    for name in ("add_update", "add_replace"):
        method = getattr(BulkOperationBuilder, name)
        if "sort" not in inspect.signature(method).parameters:
            setattr(BulkOperationBuilder, name, _accepting_no_sort(method))
