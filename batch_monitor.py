"""Operations view of the DRS Amend job: dashboard, health check for monitoring, history export.

    python batch_monitor.py status [--runs N]
    python batch_monitor.py check
    python batch_monitor.py logs [--since T] [--until T] [--status S] [--batch B] [--task-id N]
                                 [--export csv|json|txt] [--out FILE]
    python batch_monitor.py audit [--batch B]
"""

import argparse
import csv
import io
import smtplib
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pymongo.errors import PyMongoError

from amend_store import AmendStore, utc_now
from audit import seq_mismatches, summary_mismatches
from database_checks import (
    BatchId,
    Document,
    batch_of,
    fetch_batch_ids,
    fetch_cell_figures,
    fetch_completed_amend_tasks,
    fetch_expired_claims,
    fetch_journals,
    fetch_last_successful_run,
    fetch_runs,
    fetch_summary_rows,
    fetch_task_status_counts,
    fetch_transactions,
)
from utils.alerts import send_alert
from utils.cli import ExitStatus, OneLineArgumentParser, bounded_int, run_script
from utils.config import DEFAULT_CONFIG_DIR, MONITOR_CONFIG_FILE, Settings, Thresholds, load_config
from utils.connectDB import database_session
from utils.Custom_Exceptions import TaskProcessingError, TaskValidationError
from utils.reports import Outcome, text_table, to_json
from utils.secrets import scrub

OK, WARNING, CRITICAL, UNKNOWN = ExitStatus.OK, ExitStatus.WARNING, ExitStatus.CRITICAL, ExitStatus.UNKNOWN
STATE_NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}
LOG_COLUMNS = ("run_id", "run_started", "host", "run_exit_code", "Task_Id", "task_object_id", "batch", "outcome",
               "cases_moved", "duration_seconds", "message")


# --- the pure core -----------------------------------------------------------------------

def level(value: float, warning: float, critical: float) -> ExitStatus:
    return CRITICAL if value >= critical else WARNING if value >= warning else OK


def failure_rate(runs: Iterable[Document]) -> tuple[int, int]:
    """(tasks ended in error, tasks ended) over the given runs."""
    ended = [task for run in runs for task in run.get("tasks", [])
             if task.get("outcome") in (Outcome.COMPLETED, Outcome.ERROR)]
    return sum(1 for task in ended if task["outcome"] == Outcome.ERROR), len(ended)


def evaluate_health(window_runs: Sequence[Document], success: Document | None, stuck_tasks: int, now: datetime,
                    thresholds: Thresholds) -> tuple[ExitStatus, str]:
    """(state, one status line with performance data) from the runs of the window, the last
    successful run (or None) and the number of stuck tasks."""
    errors, ended = failure_rate(window_runs)
    rate = errors / ended if ended else 0.0
    rate_state = level(rate, thresholds.failure_rate_warning, thresholds.failure_rate_critical)
    stuck_state = level(stuck_tasks, thresholds.stuck_tasks_warning, thresholds.stuck_tasks_critical)
    if success is None:
        age_hours, age_state, age_text = None, CRITICAL, "no successful run recorded"
    else:
        age_hours = (now - success["ended_dtm"]).total_seconds() / 3600
        age_state = level(age_hours, thresholds.last_success_warning_hours, thresholds.last_success_critical_hours)
        age_text = f"last successful run {age_hours:.1f} h ago"
    state = max(rate_state, stuck_state, age_state)
    line = (f"DRS-AMEND {STATE_NAMES[state]} - {age_text}; failure rate {rate:.0%} over {thresholds.window_hours} h "
            f"({errors} of {ended} task(s)); {stuck_tasks} stuck task(s)"
            f" | last_success_hours={'U' if age_hours is None else f'{age_hours:.2f}'} failure_rate={rate:.3f}"
            f" stuck_tasks={stuck_tasks}")
    return state, line


def log_rows(runs: Iterable[Document], status: str | None = None, batch: str | None = None,
             task_id: int | None = None) -> list[dict[str, Any]]:
    """One row per task outcome of the runs (a run without tasks gives one row when no task filter is set)."""
    rows = []
    task_filtered = status is not None or batch is not None or task_id is not None
    for run in sorted(runs, key=lambda r: r["started_dtm"]):
        base = {"run_id": run["run_id"], "run_started": run["started_dtm"], "host": run.get("host"),
                "run_exit_code": run.get("exit_code")}
        tasks = run.get("tasks", [])
        if not tasks and not task_filtered:
            rows.append(dict(base, outcome="(no task)"))
        for task in tasks:
            if (status is not None and task.get("outcome") != status) or \
                    (batch is not None and str(task.get("batch")) != batch) or \
                    (task_id is not None and task.get("Task_Id") != task_id):
                continue
            rows.append(dict(base, Task_Id=task.get("Task_Id"), task_object_id=task.get("_id"),
                             batch=task.get("batch"), outcome=task.get("outcome"),
                             cases_moved=task.get("cases_moved"), duration_seconds=task.get("duration_seconds"),
                             message=task.get("message")))
    return [{column: row.get(column) for column in LOG_COLUMNS} for row in rows]


def with_utc_offset(value: object) -> object:
    """A date of the database (naive UTC) as an ISO 8601 time that says it is UTC; anything else as it is."""
    return value.replace(tzinfo=UTC).isoformat() if isinstance(value, datetime) and value.tzinfo is None else value


def _cell(value: object) -> str:
    return str(with_utc_offset(value)) if isinstance(value, datetime) else "" if value is None else str(value)


def export(rows: Sequence[Mapping[str, Any]], form: str) -> str:
    """The rows as csv, json or txt."""
    if form == "json":
        return to_json([{column: with_utc_offset(value) for column, value in row.items()} for row in rows]) + "\n"
    if form == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(LOG_COLUMNS)
        writer.writerows([_cell(row[column]) for column in LOG_COLUMNS] for row in rows)
        return buffer.getvalue()
    return text_table(LOG_COLUMNS, [[_cell(row[column]) for column in LOG_COLUMNS] for row in rows]) + "\n"


def dashboard(runs: Sequence[Document], window_runs: Sequence[Document], success: Document | None,
              status_counts: Mapping[str, int], stuck: Sequence[Document], now: datetime,
              thresholds: Thresholds) -> str:
    """The text of `status`: the given recent runs, then the state of the tasks and the health figures."""
    errors, ended = failure_rate(window_runs)
    lines = [f"DRS Amend at {now:%Y-%m-%d %H:%M:%S} UTC", "", "Last runs:"]
    lines.append(text_table(
        ("started", "duration s", "exit", "completed", "errored", "deferred", "moved", "host", "run id"),
        [(f"{run['started_dtm']:%Y-%m-%d %H:%M:%S}", run.get("duration_seconds"), run.get("exit_code"),
          run.get("completed"), run.get("errored"), run.get("deferred"), run.get("cases_moved"), run.get("host"),
          run["run_id"][:12]) for run in runs]) if runs else "  none recorded")
    lines += ["", "Amend tasks by status: " + (", ".join(f"{status} {count}" for status, count in
                                                       sorted(status_counts.items())) or "none")]
    lines += ["Stuck in processing (lease expired): " + (str(len(stuck)) if stuck else "none")]
    if stuck:
        lines.append(text_table(("Task_Id", "_id", "batch", "since", "claimed by"),
                                [(task.get("Task_Id"), task["_id"], batch_of(task), task.get("status_changed_dtm"),
                                  _claim_host(task)) for task in stuck]))
    lines.append(f"Failure rate over {thresholds.window_hours} h: "
                 + (f"{errors / ended:.0%} ({errors} of {ended} task(s))" if ended else "no task ended"))
    lines.append("Last successful run: " + (
        f"{(now - success['ended_dtm']).total_seconds() / 3600:.1f} h ago (run {success['run_id'][:12]})"
        if success else "none recorded"))
    return "\n".join(lines)


def _claim_host(task: Document) -> object:
    claimed_by = task.get("claimed_by")
    return claimed_by.get("host") if isinstance(claimed_by, dict) else claimed_by


# --- the shell ---------------------------------------------------------------------------

def parse_time(text: str) -> datetime:
    """An ISO 8601 date or date-time; UTC unless it says otherwise."""
    try:
        moment = datetime.fromisoformat(text)
        return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(
            f"expected an ISO date such as 2026-11-25 or 2026-11-25T08:00, got {text[:40]!r}") from None


def build_parser() -> OneLineArgumentParser:
    parser = OneLineArgumentParser(
        prog="batch_monitor.py", description="Dashboard, health check and history of the DRS Amend job.",
        epilog="exit codes: status and logs 0, or 2 on a configuration or database error; "
               "check 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (the monitoring-plugin convention); "
               "audit 0 consistent, 1 mismatches found, 2 cannot read")
    parser.add_argument("--config-dir", type=Path, default=DEFAULT_CONFIG_DIR,
                        help="folder of the INI files (default: config/ of the project)")
    commands = parser.add_subparsers(dest="command", required=True)
    # --config-dir is accepted after the command too; there it must not reset the value given before it.
    config_after = OneLineArgumentParser(add_help=False)
    config_after.add_argument("--config-dir", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    status = commands.add_parser("status", parents=[config_after],
                                 help="dashboard: last runs, tasks by status, stuck tasks, failure rate")
    status.add_argument("--runs", type=bounded_int(1, 10_000), default=10,
                        help="how many recent runs to list (default 10)")
    commands.add_parser("check", parents=[config_after],
                        help="one status line and exit code 0/1/2/3 for cron or a monitoring system; "
                             f"thresholds in config/{MONITOR_CONFIG_FILE}")
    logs = commands.add_parser("logs", parents=[config_after],
                               help="run and task history, filtered, optionally exported")
    logs.add_argument("--since", type=parse_time, help="runs started at or after this time (UTC)")
    logs.add_argument("--until", type=parse_time, help="runs started before this time (UTC)")
    logs.add_argument("--status", choices=tuple(Outcome), help="task outcome")
    logs.add_argument("--batch", help="Case_Distribution_Batch_ID")
    logs.add_argument("--task-id", type=bounded_int(), help="Task_Id")
    logs.add_argument("--export", choices=("csv", "json", "txt"), default="txt", help="format (default txt)")
    logs.add_argument("--out", type=Path, help="write to this file instead of stdout")
    audit = commands.add_parser("audit", parents=[config_after],
                                help="recompute each batch's summary from its cases, check its amend seqs against its "
                                     "tasks (reads only); exit 0 consistent, 1 mismatches, 2 cannot read")
    audit.add_argument("--batch", help="only this Case_Distribution_Batch_ID")
    return parser


def batches_to_audit(store: AmendStore, batch: str | None) -> list[BatchId]:
    """Every batch, or the one named (as text, or as the integer the text spells)."""
    batches = fetch_batch_ids(store)
    if batch is None:
        return batches
    named = [batch_id for batch_id in batches if str(batch_id) == batch and isinstance(batch_id, (str, int))]
    if not named:
        raise TaskValidationError(f"no batch {batch!r}: no transaction or summary row names it")
    return named


def audit_batches(store: AmendStore, batch: str | None, aggregated: bool) -> tuple[str, ExitStatus]:
    """The audit's report (one line per mismatch, or `consistent`, per batch) and exit code."""
    batch_ids = batches_to_audit(store, batch)
    being_amended = {journal["_id"] for journal in fetch_journals(store)}
    lines, mismatches = [], 0
    for batch_id in batch_ids:
        if batch_id in being_amended:
            lines.append(f"batch {batch_id}: being amended (its journal is open), not audited")
            continue
        try:
            found = summary_mismatches(batch_id, fetch_cell_figures(store, batch_id, aggregated),
                                       fetch_summary_rows(store, batch_id))
        except TaskValidationError as exc:
            found = [f"batch {batch_id}: its cases cannot be summed: {exc}"]
        found += seq_mismatches(batch_id, fetch_transactions(store, batch_id),
                                fetch_completed_amend_tasks(store, batch_id))
        lines += found or [f"batch {batch_id}: consistent"]
        mismatches += len(found)
    lines.append(f"audit: {len(batch_ids)} batch(es), {mismatches} mismatch(es)")
    return "\n".join(lines) + "\n", ExitStatus.TASK_ERROR if mismatches else OK


def run_command(args: argparse.Namespace, store: AmendStore, now: datetime,
                settings: Settings) -> tuple[str, ExitStatus]:
    """The command's output and exit code."""
    thresholds, job = settings.thresholds, settings.job
    if args.command == "audit":
        return audit_batches(store, args.batch, aggregated=not settings.database.is_embedded)
    if args.command == "logs":
        rows = log_rows(fetch_runs(store, args.since, args.until), args.status, args.batch, args.task_id)
        return export(rows, args.export), OK
    window_runs = fetch_runs(store, since=now - timedelta(hours=thresholds.window_hours))
    success = fetch_last_successful_run(store)
    stuck = fetch_expired_claims(store, now, job.lease, job.clock_skew)
    if args.command == "status":
        return dashboard(fetch_runs(store, limit=args.runs), window_runs, success, fetch_task_status_counts(store),
                         stuck, now, thresholds) + "\n", OK
    state, line = evaluate_health(window_runs, success, len(stuck), now, thresholds)
    return line + "\n", state


def main(argv: Sequence[str] | None = None, now: datetime | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:
        # A plugin's usage error is UNKNOWN (3) for a monitoring system, not CRITICAL (2).
        if exit_.code == ExitStatus.SETUP_ERROR and "check" in argv:
            return UNKNOWN
        raise
    now = now or utc_now()
    failure_code = UNKNOWN if args.command == "check" else ExitStatus.SETUP_ERROR
    try:
        settings = load_config(args.config_dir)
        with database_session(settings.database, read_only=True) as database:
            store = AmendStore(database, settings.job.retry)
            output, code = run_command(args, store, now, settings)
    except (TaskProcessingError, PyMongoError) as exc:
        prefix = "DRS-AMEND UNKNOWN - " if args.command == "check" else "batch_monitor: "
        print(scrub(f"{prefix}{exc}"), file=sys.stderr if args.command != "check" else sys.stdout)
        return failure_code
    if args.command == "logs" and args.out:
        try:
            args.out.write_text(output, encoding="utf-8")
        except OSError as exc:
            print(f"batch_monitor: cannot write {args.out}: {exc.strerror}", file=sys.stderr)
            return ExitStatus.SETUP_ERROR
    else:
        sys.stdout.write(output)
    if code == CRITICAL and args.command == "check" and settings.alerts is not None:
        try:
            send_alert(settings.alerts, output.split(" | ")[0].strip(), output)
        except (OSError, smtplib.SMTPException) as exc:
            print(scrub(f"batch_monitor: the alert e-mail could not be sent: {exc}"), file=sys.stderr)
    return code


if __name__ == "__main__":
    run_script(main, "batch_monitor")
