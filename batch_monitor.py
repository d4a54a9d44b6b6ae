"""Operations view of the DRS Amend job: dashboard, health check for monitoring, history export, an
operator's recorded actions on one amend task, and the settings in effect.

    python batch_monitor.py status [--runs N]
    python batch_monitor.py check
    python batch_monitor.py logs [--since T] [--until T] [--status S] [--batch B] [--task-id N]
                                 [--group-by reason] [--export csv|json|txt] [--out FILE]
    python batch_monitor.py audit [--batch B]
    python batch_monitor.py report --html FILE [--since T] [--until T]
    python batch_monitor.py task requeue|cancel|release ID --reason TEXT [--force]
    python batch_monitor.py config [--json]
"""

if __name__ == "__main__":  # before the other imports, which take a while: a signal meanwhile is one line
    from utils.starting import stop_quietly_while_starting
    stop_quietly_while_starting("batch_monitor")


import argparse
import dataclasses
import os
import smtplib
import sys
import textwrap
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.errors import PyMongoError

from amend_store import AmendStore, Clock, TaskStatus, utc_now
from coordination.claims import fetch_expired_claims, stale_claim_reason
from coordination.journal import fetch_journals
from database_checks import (
    fetch_batch_cases,
    fetch_batch_ids,
    fetch_completed_amend_tasks,
    fetch_operator_actions,
    fetch_recent_operator_actions,
    fetch_summary_rows,
    fetch_task_status_counts,
    fetch_tasks,
    fetch_transactions,
)
from history.records import History
from history.run_report import Outcome
from history.store import fetch_history, fetch_last_successful_run
from ops.alerts import send_alert
from ops.audit import (
    amended_case_findings,
    case_findings,
    read_cases,
    seq_findings,
    summary_findings,
    transaction_findings,
)
from ops.backlog import fetch_backlog
from ops.dashboard import DEFAULT_DAYS, default_period, render, report_context, write_page
from ops.monitoring import (
    CRITICAL,
    OK,
    UNKNOWN,
    WARNING,
    dashboard,
    evaluate_health,
    export,
    export_groups,
    failure_rows,
    log_rows,
    reason_groups,
)
from ops.output_files import file_name, output_destination, write_atomically
from ops.task_actions import (
    ACTION_COLUMNS,
    ACTIONS,
    RECENT_ACTIONS,
    ActionRequest,
    action_rows,
    perform,
    recent_actions_text,
)
from utils.cli import (
    ExitStatus,
    OneLineArgumentParser,
    bounded_int,
    exit_code_lines,
    named_path,
    print_whole,
    run_script,
    stopped_codes,
)
from utils.config import (
    DEFAULT_CONFIG_DIR,
    MONITOR_CONFIG_FILE,
    JobSettings,
    Settings,
    SettingValue,
    load_config,
    setting_sources,
)
from utils.connectDB import database_session
from utils.Custom_Exceptions import ConfigurationError, TaskProcessingError, TaskValidationError
from utils.documents import BatchId, Document
from utils.one_line import one_line
from utils.reports import text_table, timestamp, to_json
from utils.secrets import scrub

# --- the shell ---------------------------------------------------------------------------

# A command's output and exit code.
Answer = tuple[str, int]

# The dates --since and --until accept (UTC): far enough from datetime's limits that every computation on
# them (the default period's 28 days before --until, offsets, timestamps) stays within the calendar.
EARLIEST_TIME, LATEST_TIME = datetime(2000, 1, 1), datetime(9000, 1, 1)


def parse_time(text: str) -> datetime:
    """An ISO 8601 date or date-time from EARLIEST_TIME to LATEST_TIME; UTC unless it says otherwise."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO date such as 2026-11-25 or 2026-11-25T08:00, got {text[:40]!r}") from None
    out_of_range = argparse.ArgumentTypeError(
        f"expected an ISO date from {EARLIEST_TIME:%Y-%m-%d} to {LATEST_TIME:%Y-%m-%d} (UTC), got {text[:40]!r}")
    try:
        moment = moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment
    except OverflowError:  # an offset that takes it beyond year 1 or 9999
        raise out_of_range from None
    if not EARLIEST_TIME <= moment <= LATEST_TIME:
        raise out_of_range
    return moment


MAX_REASON_CHARS = 500


def reason_text(text: str) -> str:
    """--reason: why the operator acts, recorded on the task; not blank, at most MAX_REASON_CHARS."""
    reason = text.strip()
    if not reason:
        raise argparse.ArgumentTypeError("say why, in words: the reason is recorded on the task")
    if len(reason) > MAX_REASON_CHARS:
        raise argparse.ArgumentTypeError(f"at most {MAX_REASON_CHARS} characters, got {len(reason)}")
    return reason


def require_ordered_period(since: datetime | None, until: datetime | None) -> None:
    """[since, until) must hold time: --since at or after --until is a mistake, not an empty answer."""
    if since is not None and until is not None and since >= until:
        raise TaskValidationError(f"--since ({timestamp(since)}) must come before --until "
                                  f"({timestamp(until)})")


_READ_ERROR = "configuration, database or command-line error"
AUDIT_INCOMPLETE = ExitStatus.AUDIT_INCOMPLETE
# The exit codes of each command (every command also ends as stopped_codes says when a signal stops it).
EXIT_CODES: dict[str, dict[int, str]] = {
    "status": {OK: "done", ExitStatus.SETUP_ERROR: _READ_ERROR},
    "logs": {OK: "done", ExitStatus.SETUP_ERROR: _READ_ERROR},
    "report": {OK: "the page was written",
               ExitStatus.SETUP_ERROR: f"{_READ_ERROR}, --since not before --until, or FILE not writable"},
    "check": {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL",
              UNKNOWN: "UNKNOWN: the check could not be made (configuration, database or command-line error)"},
    "audit": {OK: "every batch was audited and is consistent", ExitStatus.TASK_ERROR: "mismatches found",
              ExitStatus.SETUP_ERROR: f"{_READ_ERROR}: nothing could be audited",
              AUDIT_INCOMPLETE: "no mismatch, but a batch could not be audited (its amend is under way or was "
                                "left unfinished): audit it again later"},
    "task": {OK: "done, and recorded on the task",
             ExitStatus.SETUP_ERROR: f"{_READ_ERROR}, a task that is missing, not an amend task or in a status the "
                                     f"action does not apply to, or one that changed meanwhile: nothing was changed"},
    "config": {OK: "done", ExitStatus.SETUP_ERROR: "configuration or command-line error"},
}
# Every command but `task` reads only; `task`, once it writes, finishes its action (ops/task_actions.perform).
STOP_CONSEQUENCE = "nothing was changed"
# The commands that write (on the embedded default: with the lock, the file saved).
WRITING_COMMANDS = frozenset({"task"})


def exit_codes_epilog() -> str:
    """--help's list of exit codes, command by command."""
    lines = [textwrap.fill("; ".join(f"{code} {meaning}" for code, meaning in meanings.items()), 100,
                           initial_indent=f"  {command:<8}", subsequent_indent=" " * 10)
             for command, meanings in EXIT_CODES.items()]
    stopped = exit_code_lines(stopped_codes(STOP_CONSEQUENCE)).splitlines()[1:]
    return "\n".join(["exit codes:", *lines, "  every command:", *stopped])


def build_parser() -> OneLineArgumentParser:
    parser = OneLineArgumentParser(
        prog="batch_monitor.py",
        description="Dashboard, health check and history of the DRS Amend job; an operator's actions on a task.",
        epilog=exit_codes_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-dir", type=named_path("a folder"), default=DEFAULT_CONFIG_DIR,
                        help="folder of the INI files (default: config/ of the project)")
    commands = parser.add_subparsers(dest="command", required=True)
    # --config-dir is accepted after the command too; there it must not reset the value given before it.
    config_after = OneLineArgumentParser(add_help=False)
    config_after.add_argument("--config-dir", type=named_path("a folder"), default=argparse.SUPPRESS,
                              help=argparse.SUPPRESS)
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
    logs.add_argument("--status", choices=[outcome.value for outcome in Outcome], help="task outcome")
    logs.add_argument("--batch", help="Case_Distribution_Batch_ID")
    logs.add_argument("--task-id", type=bounded_int(), help="Task_Id")
    logs.add_argument("--export", choices=("csv", "json", "txt"), default="txt", help="format (default txt)")
    logs.add_argument("--group-by", choices=("reason",),
                      help="one row per failure pattern (outcome and message, ids and counts folded) of the tasks "
                           "that did not complete (or of the --status asked for), with its count, first and last "
                           "time and latest example, most frequent first")
    logs.add_argument("--out", type=file_name, help="write to this file instead of stdout")
    logs.add_argument("--actions", action="store_true",
                      help="the operator actions (batch_monitor.py task) instead of the runs, newest first: time, "
                           "action, Task_Id, the status it had, who, why; --since, --until and --task-id apply")
    audit = commands.add_parser("audit", parents=[config_after],
                                help="recompute each batch's summary from its cases, check its amend seqs against its "
                                     "tasks (reads only); exit 0 consistent, 1 mismatches, 2 cannot read")
    audit.add_argument("--batch", help="only this Case_Distribution_Batch_ID")
    report = commands.add_parser("report", parents=[config_after],
                                 help="write the HTML dashboard: runs over time, health, failure patterns, stuck "
                                      "tasks, latest runs; one self-contained file")
    report.add_argument("--html", type=file_name, required=True, metavar="FILE", help="the page to write")
    report.add_argument("--since", type=parse_time,
                        help=f"runs started at or after this time (UTC; default {DEFAULT_DAYS} days before --until)")
    report.add_argument("--until", type=parse_time, help="runs started before this time (UTC; default now)")
    add_task_command(commands, config_after)
    config = commands.add_parser("config", parents=[config_after],
                                 help="the settings in effect (secrets as ***), each with where it comes from: a key "
                                      "of an INI file, an environment variable, or the default; reads no database")
    config.add_argument("--json", action="store_true", help="as JSON: a list of {setting, value, source}")
    return parser


def add_task_command(commands: Any, config_after: argparse.ArgumentParser) -> None:
    task = commands.add_parser("task", parents=[config_after],
                               help="act on one amend task, recorded on it: requeue (error or cancelled -> open), "
                                    "cancel (open -> cancelled), release (processing -> open; a live claim only "
                                    "with --force)")
    task.add_argument("action", choices=ACTIONS, help="what to do")
    task.add_argument("task_id", type=bounded_int(), metavar="ID", help="the Task_Id of the amend task")
    task.add_argument("--reason", type=reason_text, required=True, metavar="TEXT",
                      help="why: recorded on the task with the OS user, the host and the time")
    task.add_argument("--force", action="store_true",
                      help="release: a live claim too; that run can then no longer end the task, the next run finishes "
                           "its journal")


def batch_ids_to_audit(ids: dict[str, list[Any]], batch: str | None) -> tuple[list[BatchId], list[str]]:
    """(the batches to audit: every one, or the one named, as text or as the integer the text spells;
    findings about batch ids that are no batch's: neither a string nor an integer)."""
    found = [f"{name}: a Case_Distribution_Batch_ID of {value!r} ({type(value).__name__}); a batch id is a "
             f"string or an integer" for name, values in ids.items() for value in values
             if isinstance(value, bool) or not isinstance(value, (str, int))]
    batches = sorted({value for values in ids.values() for value in values
                      if isinstance(value, (str, int)) and not isinstance(value, bool)}, key=str)
    if batch is None:
        return batches, found
    named = [batch_id for batch_id in batches if str(batch_id) == batch]
    if not named:
        raise TaskValidationError(f"no batch {batch!r}: no transaction, summary row or case names it")
    return named, []


def audit_batch(store: AmendStore, batch_id: BatchId) -> list[str]:
    """The findings of one batch (none: consistent)."""
    figures = fetch_batch_cases(store, batch_id, lambda cases: read_cases(cases, batch_id))
    found = case_findings(batch_id, figures)
    found += summary_findings(batch_id, figures, fetch_summary_rows(store, batch_id))
    transaction_problems, closed = transaction_findings(batch_id, fetch_transactions(store, batch_id))
    completed = fetch_completed_amend_tasks(store, batch_id)
    found += transaction_problems + seq_findings(batch_id, closed, completed)
    named_tasks = {task["_id"]: task for task in completed} | fetch_tasks(
        store, [task_id for task_id in figures.amended_by if task_id not in {task["_id"] for task in completed}])
    return found + amended_case_findings(batch_id, figures.amended_by, named_tasks)


def not_audited(journal: Document, task: Document | None, now: datetime, job: JobSettings) -> str:
    """Why a batch with an open journal is not audited: its amend is under way, or was left unfinished."""
    holder = f"amend task {journal.get('Task_Id')} ({journal.get('task_object_id')}), phase {journal.get('phase')}"
    if task is not None and task.get("task_status") == TaskStatus.PROCESSING and \
            stale_claim_reason(task, now, job.lease, job.clock_skew) is None:
        return f"being amended by {holder}; audit it again once that is done"
    return f"an amend was left unfinished ({holder}); the next run of the job finishes it; audit it again then"


def audit_batches(store: AmendStore, batch: str | None, now: datetime, job: JobSettings) -> tuple[str, int]:
    """The audit's report (per batch, one line per finding, `consistent`, or why it was not audited) and
    its exit code: 1 when anything was found, else 3 when a batch was not audited, else 0."""
    batch_ids, found = batch_ids_to_audit(fetch_batch_ids(store), batch)
    journals = {journal["_id"]: journal for journal in fetch_journals(store)}
    holders = fetch_tasks(store, [journal.get("task_object_id") for journal in journals.values()])
    lines, mismatches, unaudited = list(found), len(found), 0
    for batch_id in batch_ids:
        if batch_id in journals:
            journal = journals[batch_id]
            lines.append(f"batch {batch_id}: not audited: "
                         f"{not_audited(journal, holders.get(journal.get('task_object_id')), now, job)}")
            unaudited += 1
            continue
        findings = audit_batch(store, batch_id)
        lines += findings or [f"batch {batch_id}: consistent"]
        mismatches += len(findings)
    lines.append(f"audit: {len(batch_ids)} batch(es), {mismatches} mismatch(es), {unaudited} not audited")
    code = ExitStatus.TASK_ERROR if mismatches else AUDIT_INCOMPLETE if unaudited else OK
    return "\n".join(map(one_line, lines)) + "\n", code


def _window(store: AmendStore, now: datetime, settings: Settings) -> History:
    """The runs of check's window: its last WINDOW_HOURS."""
    return fetch_history(store, now, settings.job.clock_skew,
                         since=now - timedelta(hours=settings.thresholds.window_hours))


def audit_command(args: argparse.Namespace, store: AmendStore, now: datetime, settings: Settings) -> Answer:
    return audit_batches(store, args.batch, now, settings.job)


def report_command(args: argparse.Namespace, store: AmendStore, now: datetime, settings: Settings) -> Answer:
    job = settings.job
    since, until = default_period(now, args.since, args.until)
    require_ordered_period(since, until)
    page = render(report_context(fetch_history(store, now, job.clock_skew, since, until), _window(store, now, settings),
                                 fetch_last_successful_run(store, now, job.clock_skew),
                                 fetch_expired_claims(store, now, job.lease, job.clock_skew), fetch_backlog(store),
                                 now, since, until, settings.thresholds,
                                 fetch_recent_operator_actions(store, RECENT_ACTIONS)))
    return page, OK


def logs_command(args: argparse.Namespace, store: AmendStore, now: datetime, settings: Settings) -> Answer:
    if args.actions:
        if args.status or args.batch or args.group_by:
            raise ConfigurationError("--actions lists the operator actions: --status, --batch and --group-by apply "
                                     "to the runs, not to them")
        return export(action_rows(fetch_operator_actions(store, args.since, args.until, args.task_id)), args.export,
                      ACTION_COLUMNS), OK
    history = fetch_history(store, now, settings.job.clock_skew, args.since, args.until)
    if history.set_apart:
        print(one_line(f"batch_monitor: WARNING: {history.anomalies()}"), file=sys.stderr)
    rows = log_rows(history.runs, args.status, args.batch, args.task_id)
    if args.group_by == "reason":
        return export_groups(reason_groups(failure_rows(rows, args.status)), args.export), OK
    return export(rows, args.export), OK


def status_command(args: argparse.Namespace, store: AmendStore, now: datetime, settings: Settings) -> Answer:
    job = settings.job
    text = dashboard(fetch_history(store, now, job.clock_skew, limit=args.runs), _window(store, now, settings),
                     fetch_last_successful_run(store, now, job.clock_skew), fetch_task_status_counts(store),
                     fetch_expired_claims(store, now, job.lease, job.clock_skew), fetch_backlog(store), now,
                     settings.thresholds)
    return f"{text}\n{recent_actions_text(fetch_recent_operator_actions(store, RECENT_ACTIONS))}\n", OK


def check_command(args: argparse.Namespace, store: AmendStore, now: datetime, settings: Settings) -> Answer:
    job = settings.job
    stuck = fetch_expired_claims(store, now, job.lease, job.clock_skew)
    state, line = evaluate_health(_window(store, now, settings), fetch_last_successful_run(store, now, job.clock_skew),
                                  len(stuck), fetch_backlog(store), now, settings.thresholds)
    return line + "\n", state


def task_command(args: argparse.Namespace, store: AmendStore, now: datetime, settings: Settings) -> Answer:
    request = ActionRequest(args.action, args.task_id, args.reason, now, args.force)
    return perform(store, request, settings.job) + "\n", OK


def setting_text(value: SettingValue) -> str:
    """A setting's value in config's table: none, yes or no, a list comma-separated, a number as written."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def config_command(args: argparse.Namespace, now: datetime, settings: Settings) -> Answer:
    """The settings in effect, each with where it comes from (utils/config.setting_sources)."""
    found = setting_sources(settings, args.config_dir, os.environ)
    if args.json:
        return to_json([dataclasses.asdict(setting) for setting in found]) + "\n", OK
    return text_table(("setting", "value", "from"), [(setting.setting, setting_text(setting.value), setting.source)
                                                     for setting in found]) + "\n", OK


Command = Callable[[argparse.Namespace, datetime, Settings], Answer]


def in_session(command: Callable[[argparse.Namespace, AmendStore, datetime, Settings], Answer]) -> Command:
    """`command` on the configured database, read only but for WRITING_COMMANDS."""
    def run(args: argparse.Namespace, now: datetime, settings: Settings) -> Answer:
        with database_session(settings.database, read_only=args.command not in WRITING_COMMANDS) as database:
            return command(args, AmendStore(database, settings.job.retry), now, settings)
    return run


COMMANDS: dict[str, Command] = {
    "audit": in_session(audit_command), "report": in_session(report_command), "logs": in_session(logs_command),
    "status": in_session(status_command), "check": in_session(check_command), "task": in_session(task_command),
    "config": config_command}


def run_command(args: argparse.Namespace, now: datetime) -> tuple[Settings, str, int]:
    """The settings, and the command's output and exit code."""
    if args.command == "logs":
        require_ordered_period(args.since, args.until)
    settings = load_config(args.config_dir)
    output, code = COMMANDS[args.command](args, now, settings)
    return settings, output, code


def parse_arguments(argv: Sequence[str]) -> argparse.Namespace | int:
    """The parsed arguments, or the exit code of a usage error of check: UNKNOWN (3) with an UNKNOWN status
    line on stdout, for a monitoring system, not CRITICAL (2) and an empty status. Any other usage error ends
    as argparse ends it."""
    try:
        return build_parser().parse_args(argv)
    except SystemExit as exit_:
        if exit_.code == ExitStatus.SETUP_ERROR and command_named(argv) == "check":
            print("DRS-AMEND UNKNOWN - command-line error of check (see batch_monitor.py check --help)")
            return UNKNOWN
        raise


def command_named(argv: Sequence[str]) -> str | None:
    """The command of the arguments: the first word that is neither an option nor --config-dir's value."""
    words = iter(argv)
    for word in words:
        if word == "--config-dir":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def deliver(args: argparse.Namespace, settings: Settings, output: str) -> int:
    """Write the output to --html or --out (where a read-only command may write, ops/output_files.py), or
    print it; OK, or SETUP_ERROR saying why it could not be written."""
    destination = args.html if args.command == "report" else args.out if args.command == "logs" else None
    if destination is None:
        print_whole(output)
        return OK
    option = "--html" if args.command == "report" else "--out"
    database_file = settings.database.embedded_path if settings.database.is_embedded else None
    try:
        target = output_destination(option, destination, database_file)
        write_page(target, output) if args.command == "report" else write_atomically(target, output)
    except ConfigurationError as exc:
        print(one_line(f"batch_monitor: {exc}"), file=sys.stderr)
        return ExitStatus.SETUP_ERROR
    except OSError as exc:
        print(one_line(f"batch_monitor: cannot write {destination}: {exc.strerror}"), file=sys.stderr)
        return ExitStatus.SETUP_ERROR
    if args.command == "report":
        print(f"batch_monitor: wrote {destination}")
    return OK


def alert_when_critical(settings: Settings, output: str) -> None:
    """check's CRITICAL line by mail, when [ALERTS] is configured; a mail that fails is said on stderr."""
    if settings.alerts is None:
        return
    try:
        send_alert(settings.alerts, output.split(" | ")[0].strip(), output)
    except (OSError, smtplib.SMTPException) as exc:
        print(one_line(scrub(f"batch_monitor: the alert e-mail could not be sent: {exc}")), file=sys.stderr)


def report_failure(command: str, error: Exception) -> int:
    """A configuration, database or command-line error in one line: for check, an UNKNOWN status line on
    stdout (exit 3, as a monitoring system expects); otherwise on stderr, exit 2."""
    if command == "check":
        print(one_line(scrub(f"DRS-AMEND UNKNOWN - {error}")))
        return UNKNOWN
    print(one_line(scrub(f"batch_monitor: {error}")), file=sys.stderr)
    return ExitStatus.SETUP_ERROR


def main(argv: Sequence[str] | None = None, clock: Clock = utc_now) -> int:
    """The command; `clock` gives the now every window, age and stale claim is judged against."""
    args = parse_arguments(sys.argv[1:] if argv is None else argv)
    if isinstance(args, int):
        return args
    try:
        settings, output, code = run_command(args, clock())
    except (TaskProcessingError, PyMongoError) as exc:
        return report_failure(args.command, exc)
    delivered = deliver(args, settings, output)
    if delivered != OK:
        return delivered
    if code == CRITICAL and args.command == "check":
        alert_when_critical(settings, output)
    return code


if __name__ == "__main__":
    run_script(main, "batch_monitor", STOP_CONSEQUENCE)
