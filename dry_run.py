"""main.py --dry-run: plan every open amend task as a run would, claiming and writing nothing, and
say per task what would move (case counts per DRC and RTOM, before and after) or why it would
be refused."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from amend_store import AmendStore
from balance_resources import Cell
from coordination.journal import fetch_journal
from database_checks import (
    batch_of,
    fetch_and_validate_template_task,
    fetch_open_tasks,
    fetch_task,
    task_batch_id,
)
from task_processor import plan_batch, task_label
from utils.config import JobSettings
from utils.Custom_Exceptions import BatchBusyError, TaskProcessingError
from utils.documents import BatchId
from utils.one_line import one_line
from utils.reports import text_table


@dataclass(frozen=True)
class DryRunResult:
    """What processing a task would do: case counts per (DRC, RTOM) before and after, or the refusal."""
    object_id: Any
    task_id: Any
    batch_id: BatchId | None  # None: the task names no valid batch
    refusal: str | None = None
    before: dict[Cell, int] = field(default_factory=dict)
    after: dict[Cell, int] = field(default_factory=dict)
    changes: int = 0

    def document(self) -> dict[str, Any]:
        cells = sorted(set(self.before) | set(self.after))
        return {"_id": self.object_id, "Task_Id": self.task_id, "batch": self.batch_id, "refusal": self.refusal,
                "cases_to_reassign": self.changes,
                "cells": [{"DRC_Id": cell.drc, "RTOM": cell.rtom, "before": self.before.get(cell, 0),
                           "after": self.after.get(cell, 0)} for cell in cells]}


def dry_run(store: AmendStore, settings: JobSettings, task_id: int | None = None) -> list[DryRunResult]:
    """Plan every open amend task (or the one of `task_id`) without claiming or writing anything."""
    results = []
    for reference in fetch_open_tasks(store, task_id):
        task = fetch_task(store, reference["_id"])
        if task is None:
            continue  # deleted since it was selected
        try:
            fetch_and_validate_template_task(store, task, settings.template_task_id)
            batch_id = task_batch_id(task)
            journal = fetch_journal(store, batch_id)
            if journal is not None:
                raise BatchBusyError(f"batch {batch_id} holds the journal (phase {journal.get('phase')}) of amend "
                                     f"task {journal.get('Task_Id')} ({journal.get('task_object_id')}); a run "
                                     f"finishes it before this task is planned")
            cases, _, plan = plan_batch(store, batch_id, settings, task_label(task))
        except TaskProcessingError as exc:
            results.append(DryRunResult(task["_id"], task.get("Task_Id"), batch_of(task),
                                        refusal=f"{type(exc).__name__}: {exc}"))
            continue
        results.append(DryRunResult(task["_id"], task.get("Task_Id"), batch_id,
                                    before={cell: len(ids) for cell, ids in cases.holdings.items()},
                                    after={Cell(cell.drc, cell.rtom): cell.count for cell in plan.summary},
                                    changes=len(plan.changes)))
    return results


def dry_run_text(results: Sequence[DryRunResult]) -> str:
    """The dry run as an operator reads it: per task, a table of the cells that would change, or the refusal."""
    if not results:
        return "dry run: no open amend task"
    blocks = []
    for result in results:
        title = one_line(f"amend task {result.task_id} ({result.object_id}) batch {result.batch_id}")
        if result.refusal:
            blocks.append(f"{title}: would be REFUSED: {one_line(result.refusal)}")
            continue
        rows = [(cell["DRC_Id"], cell["RTOM"], cell["before"], cell["after"],
                 f"{cell['after'] - cell['before']:+d}" if cell["after"] != cell["before"] else "")
                for cell in result.document()["cells"]]
        blocks.append(f"{title}: would reassign {result.changes} case(s)\n"
                      + text_table(("DRC", "RTOM", "before", "after", "change"), rows))
    return "\n\n".join(blocks)
