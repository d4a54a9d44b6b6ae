"""DRS Amend: the cron entry point that executes "Case Amend Planning among DRC" tasks."""

import argparse
import smtplib
import sys
from pathlib import Path

from pymongo.errors import PyMongoError

from task_processor import amend_task_processing, dry_run
from update_databases import record_run
from utils import __version__
from utils.alerts import load_alert_settings, send_alert
from utils.cli import OneLineArgumentParser, bounded_int, run_script
from utils.config import (
    DB_CONFIG_FILE,
    DEFAULT_CONFIG_DIR,
    DEFAULT_LOG_DIR,
    ENV_DB_NAME,
    ENV_MONGO_URI,
    JOB_CONFIG_FILE,
    LOGGING_CONFIG_FILE,
    TEMPLATE_CONFIG_FILE,
    load_database_settings,
    load_job_settings,
)
from utils.connectDB import RUN_HISTORY_COLLECTION, database_session
from utils.Custom_Exceptions import DatabaseUpdateError, TaskProcessingError
from utils.loggers import get_logger, setup_logging
from utils.read_template_task_id_ini import read_template_task_id
from utils.reports import text_table, to_json
from utils.secrets import scrub

EXIT_OK, EXIT_TASK_ERROR, EXIT_SETUP_ERROR = 0, 1, 2

DESCRIPTION = """\
Execute every open "Case Amend Planning among DRC" task, oldest first. For each task the
job moves the requested cases from the donor DRC to the receiver DRC, gives back as many
of the receiver's cases from its other RTOMs round-robin, rewrites the batch summary,
closes the amend request and records the task as completed or error. A task's writes
either all land or are all undone."""

EPILOG = f"""\
configuration (in --config-dir, default config/ of the project):
  {DB_CONFIG_FILE:<24} [DATABASE] MONGO_URI, DB_NAME; overridden by the environment
                           variables {ENV_MONGO_URI} and {ENV_DB_NAME}
  {TEMPLATE_CONFIG_FILE:<24} [TEMPLATE_TASK] TEMPLATE_TASK_ID
  {JOB_CONFIG_FILE:<24} optional: [BALANCING] MIN_SHARE_KEPT (0.2), [RECOVERY] LEASE_MINUTES (30),
                           MAX_CLOCK_SKEW_SECONDS (300), [RETRY] ATTEMPTS (5),
                           INITIAL_DELAY_SECONDS (0.5), MAX_DELAY_SECONDS (8)
  {LOGGING_CONFIG_FILE:<24} logging.config.fileConfig file (console + rotating files)
  alerts.ini               optional: [SMTP] e-mail when a task ends in error

exit codes:
  0  every task completed, or there was nothing to do (--dry-run: every task would complete)
  1  at least one task ended in error (its reason is in its status_description)
     (--dry-run: at least one task would be refused)
  2  configuration or database connection error; nothing was written
  130, 143  stopped by Ctrl-C or SIGTERM (one line, no traceback)

every run (but a dry run) is recorded in the collection {RUN_HISTORY_COLLECTION};
batch_monitor.py shows, checks and exports that history."""


def build_parser():
    parser = OneLineArgumentParser(prog="main.py", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-dir", type=Path, default=DEFAULT_CONFIG_DIR,
                        help="folder of the INI files (default: config/ of the project)")
    parser.add_argument("--log-dir", type=Path, default=DEFAULT_LOG_DIR,
                        help="folder of the log files, created when missing (default: logs/ of the project)")
    parser.add_argument("--dry-run", action="store_true",
                        help="plan every open task without claiming or writing anything; print, per task, the "
                             "case counts per DRC and RTOM before and after, or why it would be refused")
    parser.add_argument("--task-id", type=bounded_int(), metavar="N",
                        help="process only the amend task with this Task_Id (still claimed atomically)")
    parser.add_argument("--json", action="store_true",
                        help="print the run report (or the dry run) as JSON on stdout; logs stay on stderr")
    return parser


def configuration_summary(database_settings, settings, task_id):
    """What the run was configured with, without secrets."""
    return {"database": database_settings.redacted_uri, "db_name": database_settings.db_name,
            "template_task_id": settings.template_task_id, "min_share_kept": float(settings.min_share_kept),
            "lease_minutes": settings.lease.total_seconds() / 60, "retry_attempts": settings.retry.attempts,
            "task_id": task_id}


def dry_run_text(results):
    if not results:
        return "dry run: no open amend task"
    blocks = []
    for result in results:
        title = f"amend task {result.task_id} ({result.object_id}) batch {result.batch_id}"
        if result.refusal:
            blocks.append(f"{title}: would be REFUSED: {result.refusal}")
            continue
        rows = [(cell["DRC_Id"], cell["RTOM"], cell["before"], cell["after"],
                 f"{cell['after'] - cell['before']:+d}" if cell["after"] != cell["before"] else "")
                for cell in result.document()["cells"]]
        blocks.append(f"{title}: would reassign {result.changes} case(s)\n"
                      + text_table(("DRC", "RTOM", "before", "after", "change"), rows))
    return "\n\n".join(blocks)


def alert_on_errors(alerts, report, log):
    """E-mail the tasks that ended in error, when alerts are enabled; a failed e-mail is logged only."""
    errored = [outcome for outcome in report.outcomes if outcome.status == "error"]
    if alerts is None or not errored:
        return
    body = "\n".join([report.summary_line(), ""] + [
        f"amend task {o.task_id} ({o.object_id}) batch {o.batch_id}: {o.message}" for o in errored])
    try:
        send_alert(alerts, f"{len(errored)} amend task(s) ended in error (run {report.run.run_id[:12]})", body)
    except (OSError, smtplib.SMTPException) as exc:
        log.error("the alert e-mail could not be sent: %s", exc)


def record_run_quietly(db, report, configuration, log):
    try:
        record_run(db, report.document() | {"version": __version__, "configuration": configuration})
    except DatabaseUpdateError as exc:
        log.error("the run could not be recorded in %s: %s", RUN_HISTORY_COLLECTION, exc)


def main(argv=None):
    args = build_parser().parse_args(argv)
    log = None
    try:
        database_settings = load_database_settings(args.config_dir)
        settings = load_job_settings(read_template_task_id(args.config_dir), args.config_dir)
        alerts = load_alert_settings(args.config_dir)
        setup_logging(args.config_dir, args.log_dir)
        log = get_logger()
        with database_session(database_settings) as db:
            if args.dry_run:
                results = dry_run(db, settings, args.task_id)
            else:
                log.info("DRS Amend run started on %s (database %s, Template_Task_Id %s)",
                         database_settings.redacted_uri, database_settings.db_name, settings.template_task_id)
                report = amend_task_processing(db, settings, task_id=args.task_id)
                record_run_quietly(db, report, configuration_summary(database_settings, settings, args.task_id), log)
    except (TaskProcessingError, PyMongoError) as exc:
        message = scrub(f"drs-amend: {exc}")
        if log is None:
            print(message, file=sys.stderr)
        else:
            log.error(message)
        return EXIT_SETUP_ERROR
    if args.dry_run:
        print(to_json([result.document() for result in results]) if args.json else dry_run_text(results))
        return EXIT_TASK_ERROR if any(result.refusal for result in results) else EXIT_OK
    log.info(report.summary_line())
    alert_on_errors(alerts, report, log)
    if args.json:
        print(to_json(report.document()))
    return report.exit_code


if __name__ == "__main__":
    run_script(main, "drs-amend", "a task it was writing is finished or undone by a later run (see README, "
                                  "\"Crash recovery\"); on the embedded default nothing of this run was saved")
