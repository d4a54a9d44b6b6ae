"""The backlog: how many amend tasks are open and how long the oldest has waited, the first thing an
operator asks when the job falls behind. `check` judges it (monitor.ini's OPEN_TASKS_* and
OLDEST_OPEN_*_HOURS), `status`, the dashboard and the metrics textfile show it."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from amend_store import AmendStore
from database_checks import fetch_open_tasks
from utils.documents import Document


@dataclass(frozen=True)
class Backlog:
    """open_tasks: the amend tasks waiting for a run; oldest_open: the creation time of the oldest of them
    (None when none is open or none has a date); undated: open tasks whose created_dtm is not a date."""
    open_tasks: int
    oldest_open: datetime | None
    undated: int = 0

    def oldest_open_hours(self, now: datetime) -> float | None:
        """How long the oldest open task has waited; a creation time ahead of `now` (another host's clock)
        counts as waiting 0 h, never a negative age."""
        if self.oldest_open is None:
            return None
        return max((now - self.oldest_open).total_seconds() / 3600, 0.0)

    def text(self, now: datetime) -> str:
        hours = self.oldest_open_hours(now)
        waited = "" if hours is None else f", the oldest waiting {hours:.1f} h"
        undated = f" ({self.undated} without a created_dtm date)" if self.undated else ""
        return f"{self.open_tasks} open task(s){waited}{undated}"


def backlog_of(open_tasks: Iterable[Document]) -> Backlog:
    """The backlog of these open tasks (as fetch_open_tasks reads them)."""
    tasks = list(open_tasks)
    dates = [task["created_dtm"] for task in tasks if isinstance(task.get("created_dtm"), datetime)]
    return Backlog(len(tasks), min(dates, default=None), len(tasks) - len(dates))


def fetch_backlog(store: AmendStore) -> Backlog:
    return backlog_of(fetch_open_tasks(store))
