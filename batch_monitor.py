"""Operations view of the DRS Amend job: dashboard, health check for monitoring, history export.

    python batch_monitor.py status [--runs N]
    python batch_monitor.py check
    python batch_monitor.py logs [--since T] [--until T] [--status S] [--batch B] [--task-id N]
                                 [--group-by reason] [--export csv|json|txt] [--out FILE]
    python batch_monitor.py audit [--batch B]
    python batch_monitor.py report --html FILE [--since T] [--until T]
"""

import argparse
import smtplib
import sys
import textwrap
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pymongo.errors import PyMongoError

from amend_store import AmendStore, Clock, utc_now
from audit import seq_mismatches, summary_mismatches
from database_checks import (
    BatchId,
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
from html_report import DEFAULT_DAYS, default_period, render, report_context, write_page
from monitoring import (
    CRITICAL,
    OK,
    UNKNOWN,
    dashboard,
    evaluate_health,
    export,
    export_groups,
    failure_rows,
    log_rows,
    reason_groups,
)
from utils.alerts import send_alert
from utils.cli import ExitStatus, OneLineArgumentParser, bounded_int, exit_code_lines, run_script, stopped_codes
from utils.config import DEFAULT_CONFIG_DIR, MONITOR_CONFIG_FILE, Settings, load_config
from utils.connectDB import database_session
from utils.Custom_Exceptions import TaskProcessingError, TaskValidationError
from utils.reports import Outcome
from utils.secrets import scrub

# --- the shell ---------------------------------------------------------------------------

def parse_time(text: str) -> datetime:
    """An ISO 8601 date or date-time; UTC unless it says otherwise."""
    try:
        moment = datetime.fromisoformat(text)
        return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(
            f"expected an ISO date such as 2026-11-25 or 2026-11-25T08:00, got {text[:40]!r}") from None


_READ_ERROR = "configuration, database or command-line error"
# The exit codes of each command (every command also ends as stopped_codes says when a signal stops it).
EXIT_CODES: dict[str, dict[int, str]] = {
    "status": {OK: "done", ExitStatus.SETUP_ERROR: _READ_ERROR},
    "logs": {OK: "done", ExitStatus.SETUP_ERROR: _READ_ERROR},
    "report": {OK: "the page was written",
               ExitStatus.SETUP_ERROR: f"{_READ_ERROR}, --since not before --until, or FILE not writable"},
    "check": {OK: "OK", ExitStatus.WARNING: "WARNING", CRITICAL: "CRITICAL",
              UNKNOWN: "UNKNOWN: the check could not be made (configuration, database or command-line error)"},
    "audit": {OK: "every batch audited is consistent", ExitStatus.TASK_ERROR: "mismatches found",
              ExitStatus.SETUP_ERROR: f"{_READ_ERROR}: nothing could be audited"},
}
STOP_CONSEQUENCE = "it reads only, nothing was changed"


def exit_codes_epilog() -> str:
    """--help's list of exit codes, command by command."""
    lines = [textwrap.fill("; ".join(f"{code} {meaning}" for code, meaning in meanings.items()), 100,
                           initial_indent=f"  {command:<8}", subsequent_indent=" " * 10)
             for command, meanings in EXIT_CODES.items()]
    stopped = exit_code_lines(stopped_codes(STOP_CONSEQUENCE)).splitlines()[1:]
    return "\n".join(["exit codes:", *lines, "  every command:", *stopped])


def build_parser() -> OneLineArgumentParser:
    parser = OneLineArgumentParser(
        prog="batch_monitor.py", description="Dashboard, health check and history of the DRS Amend job.",
        epilog=exit_codes_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
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
    logs.add_argument("--group-by", choices=("reason",),
                      help="one row per failure pattern (outcome and message, ids and counts folded) of the tasks "
                           "that did not complete (or of the --status asked for), with its count, first and last "
                           "time and latest example, most frequent first")
    logs.add_argument("--out", type=Path, help="write to this file instead of stdout")
    audit = commands.add_parser("audit", parents=[config_after],
                                help="recompute each batch's summary from its cases, check its amend seqs against its "
                                     "tasks (reads only); exit 0 consistent, 1 mismatches, 2 cannot read")
    audit.add_argument("--batch", help="only this Case_Distribution_Batch_ID")
    report = commands.add_parser("report", parents=[config_after],
                                 help="write the HTML dashboard: runs over time, health, failure patterns, stuck "
                                      "tasks, latest runs; one self-contained file")
    report.add_argument("--html", type=Path, required=True, metavar="FILE", help="the page to write")
    report.add_argument("--since", type=parse_time,
                        help=f"runs started at or after this time (UTC; default {DEFAULT_DAYS} days before --until)")
    report.add_argument("--until", type=parse_time, help="runs started before this time (UTC; default now)")
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
    if args.command == "report":
        since, until = default_period(now, args.since, args.until)
        if since >= until:
            raise TaskValidationError(f"--since ({since:%Y-%m-%d %H:%M}) must come before --until "
                                      f"({until:%Y-%m-%d %H:%M})")
        window = fetch_runs(store, since=now - timedelta(hours=thresholds.window_hours))
        page = render(report_context(fetch_runs(store, since, until), window, fetch_last_successful_run(store),
                                     fetch_expired_claims(store, now, job.lease, job.clock_skew), now, since, until,
                                     thresholds))
        return page, OK
    if args.command == "logs":
        rows = log_rows(fetch_runs(store, args.since, args.until), args.status, args.batch, args.task_id)
        if args.group_by == "reason":
            return export_groups(reason_groups(failure_rows(rows, args.status)), args.export), OK
        return export(rows, args.export), OK
    window_runs = fetch_runs(store, since=now - timedelta(hours=thresholds.window_hours))
    success = fetch_last_successful_run(store)
    stuck = fetch_expired_claims(store, now, job.lease, job.clock_skew)
    if args.command == "status":
        return dashboard(fetch_runs(store, limit=args.runs), window_runs, success, fetch_task_status_counts(store),
                         stuck, now, thresholds) + "\n", OK
    state, line = evaluate_health(window_runs, success, len(stuck), now, thresholds)
    return line + "\n", state


def main(argv: Sequence[str] | None = None, clock: Clock = utc_now) -> int:
    """The command; `clock` gives the now every window, age and stale claim is judged against."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:
        # A plugin's usage error is UNKNOWN (3) for a monitoring system, not CRITICAL (2).
        if exit_.code == ExitStatus.SETUP_ERROR and "check" in argv:
            return UNKNOWN
        raise
    now = clock()
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
    destination = args.html if args.command == "report" else args.out if args.command == "logs" else None
    if destination is not None:
        try:
            write_page(destination, output) if args.command == "report" else destination.write_text(output, "utf-8")
        except OSError as exc:
            print(f"batch_monitor: cannot write {destination}: {exc.strerror}", file=sys.stderr)
            return ExitStatus.SETUP_ERROR
        if args.command == "report":
            print(f"batch_monitor: wrote {destination}")
    else:
        sys.stdout.write(output)
    if code == CRITICAL and args.command == "check" and settings.alerts is not None:
        try:
            send_alert(settings.alerts, output.split(" | ")[0].strip(), output)
        except (OSError, smtplib.SMTPException) as exc:
            print(scrub(f"batch_monitor: the alert e-mail could not be sent: {exc}"), file=sys.stderr)
    return code


if __name__ == "__main__":
    run_script(main, "batch_monitor", STOP_CONSEQUENCE)
