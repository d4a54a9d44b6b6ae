"""DRS Amend: the cron entry point that executes "Case Amend Planning among DRC" tasks."""

if __name__ == "__main__":  # before the other imports, which take a while: a signal meanwhile is one line
    from utils.starting import stop_quietly_while_starting
    stop_quietly_while_starting("drs-amend")


import argparse
import logging
import signal
import smtplib
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from pymongo.errors import PyMongoError

from amend_store import RUN_HISTORY_COLLECTION, AmendStore, BatchRead, Clock, InPlaceRead, StoppingStore, utc_now
from coordination.claims import fetch_expired_claims
from database_checks import fetch_amend_task_statuses, holds_the_job
from dry_run import dry_run, dry_run_text
from history.run_report import Outcome, RunReport
from history.store import fetch_last_successful_run, keep_history_within, record_run
from ops.alerts import send_alert
from ops.backlog import Backlog, fetch_backlog
from ops.metrics import run_metrics, write_metrics
from task_processor import amend_task_processing
from utils import __version__
from utils.cli import (
    ExitStatus,
    OneLineArgumentParser,
    bounded_int,
    exit_code_lines,
    named_path,
    run_script,
    stopped_after_work,
    stopped_codes,
)
from utils.config import (
    DB_CONFIG_FILE,
    DEFAULT_CONFIG_DIR,
    DEFAULT_LOG_DIR,
    ENV_DB_NAME,
    ENV_MONGO_URI,
    JOB_CONFIG_FILE,
    LOGGING_CONFIG_FILE,
    MAX_RUN_MINUTES,
    TEMPLATE_CONFIG_FILE,
    AlertSettings,
    Settings,
    load_config,
)
from utils.connectDB import database_session
from utils.Custom_Exceptions import DatabaseConnectionError, DatabaseUpdateError, TaskProcessingError
from utils.loggers import get_logger, log_to_console, setup_logging
from utils.one_line import one_line
from utils.reports import to_json
from utils.secrets import scrub
from utils.shutdown import Interrupted, Phase, SignalRecord, StopRequest, recording_signals

DESCRIPTION = """\
Execute every open "Case Amend Planning among DRC" task, oldest first. For each task the
job moves the requested cases from the donor DRC to the receiver DRC, gives back as many
of the receiver's cases from its other RTOMs round-robin, rewrites the batch summary,
closes the amend request and records the task as completed or error. A task's writes
either all land or are all undone."""

PROGRAM = "drs-amend"  # how its one-line messages name it
# What a second signal leaves behind once the run works on its tasks (see docs/design.md, "Crash recovery").
STOP_CONSEQUENCE = ("a task it was writing is finished or undone by a later run (see docs/design.md, "
                    "\"Crash recovery\"); on the embedded default nothing of this run was saved")
# What a stop at once leaves, by the phase it came in: while the run works on its tasks, STOP_CONSEQUENCE;
# before (the configuration, the wait for the lock, the load) nothing was changed.
STOP_CONSEQUENCES = {Phase.WORKING: STOP_CONSEQUENCE}
EXIT_CODES = {
    ExitStatus.OK: "every task completed, or there was nothing to do (--dry-run: every task would complete)",
    ExitStatus.TASK_ERROR: "at least one task ended in error (its reason is in its status_description); the other "
                           "tasks were processed (--dry-run: at least one task would be refused)",
    ExitStatus.SETUP_ERROR: "configuration, connection or command-line error (--task-id naming no amend task "
                            "included); nothing was written",
    **stopped_codes(STOP_CONSEQUENCE),
    128 + signal.SIGINT: "stopped by Ctrl-C (SIGINT): the task in hand was finished, no other claimed, the run "
                         f"recorded; a second signal stops it at once, one line, no traceback: {STOP_CONSEQUENCE}; "
                         "one while the run waits for the lock or loads the file stops it at once too: nothing was "
                         "changed. Once the run is recorded, "
                         "a signal changes no exit code: the run ends with the one it was recorded with",
}

EPILOG = f"""\
configuration (in --config-dir, default config/ of the project):
  {DB_CONFIG_FILE:<24} [DATABASE] MONGO_URI, DB_NAME; overridden by the environment
                           variables {ENV_MONGO_URI} and {ENV_DB_NAME}
  {TEMPLATE_CONFIG_FILE:<24} [TEMPLATE_TASK] TEMPLATE_TASK_ID
  {JOB_CONFIG_FILE:<24} optional: [BALANCING] MIN_SHARE_KEPT (0.2), [RECOVERY] LEASE_MINUTES (30),
                           MAX_CLOCK_SKEW_SECONDS (300), [RETRY] ATTEMPTS (5),
                           INITIAL_DELAY_SECONDS (0.5), MAX_DELAY_SECONDS (8),
                           [RUN] MAX_MINUTES (no limit), [METRICS] TEXTFILE (none),
                           [HISTORY] RETENTION_DAYS (kept for ever)
  {LOGGING_CONFIG_FILE:<24} logging.config.fileConfig file (console + rotating files); a dry run
                           keeps no log file (it logs on stderr only)
  alerts.ini               optional: [SMTP] e-mail when a task ends in error

{exit_code_lines(EXIT_CODES)}

every run (but a dry run) is recorded in the collection {RUN_HISTORY_COLLECTION};
batch_monitor.py shows, checks and exports that history."""


def build_parser() -> OneLineArgumentParser:
    parser = OneLineArgumentParser(prog="main.py", description=DESCRIPTION, epilog=EPILOG,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-dir", type=named_path("a folder"), default=DEFAULT_CONFIG_DIR,
                        help="folder of the INI files (default: config/ of the project)")
    parser.add_argument("--log-dir", type=named_path("a folder"), default=DEFAULT_LOG_DIR,
                        help="folder of the log files, created when missing (default: logs/ of the project); a "
                             "dry run keeps no log file: it logs on stderr only")
    parser.add_argument("--dry-run", action="store_true",
                        help="plan every open task without claiming or writing anything; print, per task, the "
                             "case counts per DRC and RTOM before and after, or why it would be refused")
    parser.add_argument("--task-id", type=bounded_int(), metavar="N",
                        help="process only the amend task with this Task_Id (still claimed atomically); no amend "
                             "task with it is an error (exit 2)")
    parser.add_argument("--json", action="store_true",
                        help="print the run report (or the dry run) as JSON on stdout; logs stay on stderr")
    parser.add_argument("--max-minutes", type=bounded_int(1, MAX_RUN_MINUTES), metavar="N",
                        help=f"claim no new task after N minutes of the run (the task in hand is finished); "
                             f"overrides [RUN] MAX_MINUTES of {JOB_CONFIG_FILE}")
    parser.add_argument("--quiet", action="store_true",
                        help="print only warnings and errors on stderr (the log files keep everything): from cron, "
                             "which mails what a job prints, a mail then means something needs a look")
    return parser


def configuration_summary(settings: Settings, task_id: int | None) -> dict[str, Any]:
    """What the run was configured with, without secrets."""
    job = settings.job
    return {"database": settings.database.redacted_uri, "db_name": settings.database.db_name,
            "template_task_id": job.template_task_id, "min_share_kept": float(job.min_share_kept),
            "lease_minutes": job.lease.total_seconds() / 60, "retry_attempts": job.retry.attempts,
            "task_id": task_id}


def alert_on_errors(alerts: AlertSettings | None, report: RunReport, log: logging.Logger) -> None:
    """E-mail the tasks that ended in error, when alerts are enabled; a failed e-mail is logged only."""
    errored = [outcome for outcome in report.outcomes if outcome.status == Outcome.ERROR]
    if alerts is None or not errored:
        return
    body = "\n".join([report.summary_line(), ""] + [
        one_line(f"amend task {o.task_id} ({o.object_id}) batch {o.batch_id}: {o.message}") for o in errored])
    try:
        send_alert(alerts, f"{len(errored)} amend task(s) ended in error (run {report.run.run_id[:12]})", body)
    except (OSError, smtplib.SMTPException) as exc:
        log.error("the alert e-mail could not be sent: %s", exc)


def run_document(report: RunReport, settings: Settings, task_id: int | None) -> dict[str, Any]:
    """The run as the run history records it and --json prints it."""
    return report.document() | {"version": __version__, "configuration": configuration_summary(settings, task_id)}


def record_run_quietly(store: AmendStore, document: dict[str, Any], log: logging.Logger) -> None:
    try:
        record_run(store, document)
    except DatabaseUpdateError as exc:
        log.error("the run could not be recorded in %s: %s", RUN_HISTORY_COLLECTION, exc)


def keep_history_bounded(store: AmendStore, settings: Settings, now: datetime, log: logging.Logger) -> None:
    """[HISTORY] RETENTION_DAYS, counted back from `now`: a failure is logged and changes no exit code."""
    try:
        pruned = keep_history_within(store, settings.job.history_retention_days, now,
                                     ttl_index=not settings.database.is_embedded)
    except (DatabaseUpdateError, PyMongoError) as exc:
        log.error("the retention of %s could not be applied: %s", RUN_HISTORY_COLLECTION, scrub(exc))
        return
    if pruned:
        log.info("removed %d run(s) older than %d day(s) from %s", pruned, settings.job.history_retention_days,
                 RUN_HISTORY_COLLECTION)


def health_for_metrics(store: AmendStore, settings: Settings, now: datetime,
                       log: logging.Logger) -> tuple[datetime | None, int, Backlog] | None:
    """(end of the last successful run before this one, stuck tasks, the backlog left) for [METRICS] TEXTFILE;
    None when it is not set, or when they cannot be read (logged)."""
    if settings.job.metrics_textfile is None:
        return None
    try:
        success = fetch_last_successful_run(store, now, settings.job.clock_skew)
        stuck = fetch_expired_claims(store, now, settings.job.lease, settings.job.clock_skew)
        backlog = fetch_backlog(store)
    except PyMongoError as exc:
        log.error("the figures of %s could not be read: %s", settings.job.metrics_textfile, scrub(exc))
        return None
    return (None if success is None else success.ended), len(stuck), backlog


@contextmanager
def after_the_tasks(what: str, log: logging.Logger) -> Iterator[None]:
    """The bookkeeping a run does once its tasks are done (retention, the metrics' figures): whatever fails
    there (an unforeseen document, a bug) is logged as an error, never allowed to end the session, which
    would discard the tasks' work on the embedded default. A signal (Interrupted) is not caught."""
    try:
        yield
    except Exception:
        log.exception("%s failed after the tasks were done; their work is kept", what)


def write_metrics_quietly(path: Path, run: dict[str, Any], previous_success: datetime | None, stuck: int,
                          backlog: Backlog, log: logging.Logger) -> None:
    last_success = run["ended_dtm"] if run["exit_code"] == ExitStatus.OK else previous_success
    try:
        write_metrics(path, run_metrics(run, last_success, stuck, backlog))
    except OSError as exc:
        log.error("the metrics file %s could not be written: %s", path, exc.strerror or exc)


def main(argv: Sequence[str] | None = None, clock: Clock = utc_now) -> int:
    """The run; `clock` gives every time it reads or records (claims, leases, retention, the run's record).

    SIGTERM and Ctrl-C are recorded, and acted on at the run's check points (utils/shutdown.py):
    until the run has its database, a signal stops it at once; then the first one stops it between
    two tasks (the run is recorded as stopped by it, exit code 128 + its number) and a second one
    stops it at once, before its next database operation or chunk of the save (nothing of the run
    is saved on the embedded default). Once the run is recorded (and the embedded file saved), a
    signal changes neither the record nor the exit code: the run ends with the code it was recorded
    with, after finishing its report, or at once on a second signal, saying so in one line."""
    args = build_parser().parse_args(argv)
    with recording_signals() as signals:
        return run_the_job(args, clock, signals)


def run_the_job(args: argparse.Namespace, clock: Clock, signals: SignalRecord) -> int:
    """main's run, with the record of the signals it received."""
    run = JobRun(args, clock, signals, started=clock())
    try:
        run.prepare()
        with database_session(run.settings.database, read_only=args.dry_run,
                              final_write=run.final_write()) as database:
            run.work(database)
    except (TaskProcessingError, PyMongoError) as exc:
        return run.setup_failed(exc)
    if args.dry_run:
        return run.print_dry_run()
    return run.after_the_save()


class JobRun:
    """One run of main.py: its settings, and what it has done so far, for the steps that follow one another
    (prepare, work in the database session, record the run while the file is saved, then report)."""

    def __init__(self, args: argparse.Namespace, clock: Clock, signals: SignalRecord, started: datetime):
        self.args, self.clock, self.signals, self.started = args, clock, signals, started
        self.log: logging.Logger | None = None
        self.stop = StopRequest()
        self.report: RunReport | None = None
        self.recorded: dict[str, Any] | None = None
        self.health: tuple[datetime | None, int, Backlog] | None = None
        self.results: list[Any] = []

    def prepare(self) -> None:
        """Settings, logging and the stop request; from here a signal waits for a check point (not in a dry
        run, which writes nothing, no log file or folder either: it logs on stderr only, and a signal stops it
        at once, wherever it is)."""
        self.settings = load_config(self.args.config_dir)
        if self.args.dry_run:
            log_to_console(quiet=self.args.quiet)
        else:
            setup_logging(self.args.config_dir, self.args.log_dir, quiet=self.args.quiet)
        self.log = get_logger()
        self.stop = StopRequest(self.args.max_minutes or self.settings.job.max_minutes, signals=self.signals)
        if not self.args.dry_run:
            self.signals.enter(Phase.HOLDING)

    def final_write(self) -> tuple[str, Callable[[Any], None]] | None:
        """The run's record, written last (embedded/data_file.py FinalWrite); none for a dry run."""
        return None if self.args.dry_run else (RUN_HISTORY_COLLECTION, self.record_the_run)

    def work(self, database: Any) -> None:
        """The tasks (or the dry run's plans), then the bookkeeping after them."""
        settings, log = self.settings, self.logger
        if not self.args.dry_run:
            self.stop.start_working()
        store = StoppingStore(database, settings.job.retry, self.stop, *self.batch_read())
        if not holds_the_job(store):
            raise DatabaseConnectionError(
                f"database {settings.database.db_name} on {settings.database.redacted_uri} holds no System_tasks and "
                f"no Template_task document: is DB_NAME or MONGO_URI wrong? (the embedded default is loaded with "
                f"database_update.py)")
        if self.args.dry_run:
            if self.args.task_id is not None:
                fetch_amend_task_statuses(store, self.args.task_id)  # refuses a Task_Id no amend task has
            self.results = dry_run(store, settings.job, self.args.task_id)
            return
        log.info("DRS Amend run started on %s (database %s, Template_Task_Id %s)",
                 settings.database.redacted_uri, settings.database.db_name, settings.job.template_task_id)
        self.report = amend_task_processing(store, settings.job, self.clock, task_id=self.args.task_id,
                                            started=self.started, stop=self.stop)
        with after_the_tasks("the retention of the run history", log):
            keep_history_bounded(store, settings, self.clock(), log)
        with after_the_tasks("reading the figures of the metrics file", log):
            self.health = health_for_metrics(store, settings, self.clock(), log)

    def batch_read(self) -> tuple[BatchRead, InPlaceRead | None]:
        """On a server a task reads only what can move; the embedded engine reads the whole batch, from its own
        store, faster than it runs the push-down read's aggregations (docs/scale.md)."""
        if not self.settings.database.is_embedded:
            return BatchRead.PUSH_DOWN, None
        from embedded.mongomock_compat import matching_documents  # loaded already: a run on a server never loads it
        return BatchRead.FULL, matching_documents

    def record_the_run(self, database: Any) -> None:
        """The run's last write (on the embedded default, made while the file is saved): its duration
        covers the wait for the lock, loading, the job and saving, and the wait is recorded apart too; a
        signal that came by then marks it as stopped, one that comes later changes neither the record nor
        the exit code."""
        report = self.finished_report
        self.stop.check()
        if self.stop.signal_number is not None:
            report.stop_signal = self.stop.signal_number
            report.stop_reason = report.stop_reason or self.stop.reason()
        report.ended = self.clock()
        report.lock_wait_seconds = self.lock_wait(report)
        self.recorded = run_document(report, self.settings, self.args.task_id)
        record_run_quietly(AmendStore(database, self.settings.job.retry), self.recorded, get_logger())

    def lock_wait(self, report: RunReport) -> float:
        """The seconds the run waited for another process's lock of the embedded data file (0 on a server),
        as the data file measured it, never more than the duration its clock gives the run."""
        if not self.settings.database.is_embedded:
            return 0.0
        from embedded.data_file import held_lock_wait  # loaded already: a run on a server never loads it

        duration = ((report.ended or report.started) - report.started).total_seconds()
        return max(0.0, min(held_lock_wait(self.settings.database.embedded_path), duration))

    @property
    def logger(self) -> logging.Logger:
        if self.log is None:
            raise RuntimeError("the run's logging is not set up yet")
        return self.log

    @property
    def finished_report(self) -> RunReport:
        if self.report is None:
            raise RuntimeError("the run has no report: its tasks were not processed")
        return self.report

    def setup_failed(self, error: Exception) -> int:
        """A configuration, connection or database error: one line (logged once logging is set up)."""
        if self.log is None:
            print(one_line(scrub(f"{PROGRAM}: {error}")), file=sys.stderr)
        else:
            self.log.error(scrub(error))
        return ExitStatus.SETUP_ERROR

    def print_dry_run(self) -> int:
        results = self.results
        print(to_json([result.document() for result in results]) if self.args.json else dry_run_text(results))
        return ExitStatus.TASK_ERROR if any(result.refusal for result in results) else ExitStatus.OK

    def after_the_save(self) -> int:
        """The steps after the run is saved and recorded: metrics, summary line, alert, --json. Their check
        points end them at a second signal; the exit code stays the one recorded."""
        report, log, signals = self.finished_report, self.logger, self.signals
        code = report.exit_code  # the one recorded
        signals.commit(code)
        try:
            # Check points between the steps: a second signal, even one whose raise a __del__ swallowed, ends them.
            signals.check()
            if self.health is not None and self.settings.job.metrics_textfile is not None and self.recorded:
                write_metrics_quietly(self.settings.job.metrics_textfile, self.recorded, *self.health, log)
            signals.check()
            log.info(report.summary_line())
            alert_on_errors(self.settings.alerts, report, log)
            signals.check()
            if self.args.json:
                print(to_json(self.recorded))
        except Interrupted as interruption:
            signals.stopped()
            return stopped_after_work(PROGRAM, interruption.signal_number, code, "the run was recorded",
                                      "what it had still to write (metrics, alert e-mail, report)")
        signals_in_the_record = 0 if report.stop_signal is None else 1
        if signals.last is not None and signals.count > signals_in_the_record:
            log.warning("%s received after the run was recorded: it changes nothing, the run ends with the exit "
                        "code it was recorded with, %d", signal.Signals(signals.last).name, code)
        return code


if __name__ == "__main__":
    run_script(main, PROGRAM, STOP_CONSEQUENCES)
