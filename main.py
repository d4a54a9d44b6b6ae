"""DRS Amend: the cron entry point that executes "Case Amend Planning among DRC" tasks."""

import argparse
import sys
from pathlib import Path

from pymongo.errors import PyMongoError

from task_processor import amend_task_processing
from utils.config import (DB_CONFIG_FILE, DEFAULT_CONFIG_DIR, DEFAULT_LOG_DIR, ENV_DB_NAME, ENV_MONGO_URI,
                          JOB_CONFIG_FILE, LOGGING_CONFIG_FILE, TEMPLATE_CONFIG_FILE, load_database_settings,
                          load_job_settings)
from utils.connectDB import database_session
from utils.Custom_Exceptions import TaskProcessingError
from utils.loggers import get_logger, setup_logging
from utils.read_template_task_id_ini import read_template_task_id
from utils.secrets import register_uri_secrets, scrub

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
                           [RETRY] ATTEMPTS (5), INITIAL_DELAY_SECONDS (0.5), MAX_DELAY_SECONDS (8)
  {LOGGING_CONFIG_FILE:<24} logging.config.fileConfig file (console + rotating files)

exit codes:
  0  every task completed, or there was nothing to do
  1  at least one task ended in error (its reason is in its status_description)
  2  configuration or database connection error; nothing was written"""


def build_parser():
    parser = argparse.ArgumentParser(prog="main.py", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-dir", type=Path, default=DEFAULT_CONFIG_DIR,
                        help="folder of the INI files (default: config/ of the project)")
    parser.add_argument("--log-dir", type=Path, default=DEFAULT_LOG_DIR,
                        help="folder of the log files, created when missing (default: logs/ of the project)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    log = None
    try:
        database_settings = load_database_settings(args.config_dir)
        register_uri_secrets(database_settings.uri)
        settings = load_job_settings(read_template_task_id(args.config_dir), args.config_dir)
        setup_logging(args.config_dir, args.log_dir)
        log = get_logger()
        with database_session(database_settings) as db:
            log.info("DRS Amend run started on %s (database %s, Template_Task_Id %s)",
                     database_settings.redacted_uri, database_settings.db_name, settings.template_task_id)
            report = amend_task_processing(db, settings)
    except (TaskProcessingError, PyMongoError) as exc:
        message = scrub(f"drs-amend: {exc}")
        if log is None:
            print(message, file=sys.stderr)
        else:
            log.error(message)
        return EXIT_SETUP_ERROR
    log.info(report.summary_line())
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())
