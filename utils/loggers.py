"""Logging set up from config/loggers.ini (logging.config.fileConfig); and the one-line message naming the
owner of a file the job creates (a log file, the embedded file's lock and holder files, a save's temporary
file) that another account left behind and this process cannot open."""

import logging
import logging.config
import os
import pwd
import sys
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO, TypeVar

from tqdm import tqdm

from utils.config import DEFAULT_CONFIG_DIR, DEFAULT_LOG_DIR, LOGGING_CONFIG_FILE
from utils.Custom_Exceptions import ConfigurationError
from utils.one_line import OneLineFilter
from utils.reports import timestamp
from utils.secrets import SecretFilter, scrub

LOGGER_NAME = "drs_amend"
Item = TypeVar("Item")


class IsoTimeFormatter(logging.Formatter):
    """Every log line's time as every output of the job writes it: ISO 8601 in UTC with its offset, to the
    second (utils/reports.timestamp), whatever the host's time zone. loggers.ini names it as its formatters'
    class."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # the name logging gives it
        return timestamp(datetime.fromtimestamp(record.created, UTC))


def account_name(uid: int) -> str:
    """The name of the account `uid`, or "uid N" when no account has it."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def permission_refusal(kind: str, path: Path | str, verb: str, remedy: str = "remove it or chown it") -> str:
    """Why this process may not open `path` (a `kind`: "log file", "lock file"), in one line naming its owner:
    "log file logs/drs_amend.log belongs to root and cannot be written by drs: remove it or chown it". A file
    that does not exist cannot be created in its folder: the folder and its owner are named instead."""
    me = account_name(os.geteuid())
    try:
        owner = account_name(os.stat(path).st_uid)
    except FileNotFoundError:
        folder = Path(path).parent
        try:
            folder_owner = account_name(os.stat(folder).st_uid)
        except OSError:
            return f"{kind} {path} cannot be created by {me}: permission denied in its folder {folder}"
        if folder_owner == me:
            return f"{kind} {path} cannot be created: its folder {folder} is not writable (check its permissions)"
        return (f"{kind} {path} cannot be created: its folder {folder} belongs to {folder_owner} and cannot be "
                f"written by {me}: chown it, or give the job another folder")
    except OSError as exc:
        return f"{kind} {path} cannot be {verb} by {me}: {exc.strerror}"
    if owner == me:
        return f"{kind} {path} cannot be {verb} by {me}, its owner: permission denied (check its permissions)"
    return f"{kind} {path} belongs to {owner} and cannot be {verb} by {me}: {remedy}"


def _denied(error: BaseException) -> PermissionError | None:
    """The PermissionError naming a file that `error` is or was raised from (fileConfig raises it as it is)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, PermissionError) and current.filename:
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def setup_logging(config_dir: Path = DEFAULT_CONFIG_DIR, log_dir: Path = DEFAULT_LOG_DIR, quiet: bool = False) -> None:
    """Apply loggers.ini; its handlers may write under %(logdir)s, created here when missing. `quiet`: the
    console (any handler that is not a file) shows warnings and errors only; the files keep everything. A log
    file (or folder) this process may not write is named with its owner, not blamed on loggers.ini."""
    path = Path(config_dir) / LOGGING_CONFIG_FILE
    if not path.is_file():
        raise ConfigurationError(f"logging configuration {path} is missing")
    log_dir = Path(log_dir)
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
    except PermissionError as exc:
        raise ConfigurationError(permission_refusal("log folder", exc.filename or log_dir, "created")) from exc
    except OSError as exc:
        raise ConfigurationError(f"log folder {log_dir} cannot be created: {exc.strerror}") from exc
    _apply(path, log_dir)
    # Set here, whatever the file says: no secret written, and every message on one line (utils/one_line.py).
    secret_filter, one_line_filter = SecretFilter(), OneLineFilter(scrub)
    loggers = [logging.getLogger(), *(logger for logger in logging.Logger.manager.loggerDict.values()
                                      if isinstance(logger, logging.Logger))]
    for handler in {handler: None for logger in loggers for handler in logger.handlers}:
        handler.addFilter(secret_filter)
        handler.addFilter(one_line_filter)
    for logger in (logging.getLogger(), get_logger()):
        for handler in logger.handlers:
            if quiet and not isinstance(handler, logging.FileHandler):
                handler.setLevel(max(handler.level, logging.WARNING))


def _apply(path: Path, log_dir: Path) -> None:
    """fileConfig of `path`, %(logdir)s being `log_dir`; a ConfigurationError naming the file at fault."""
    # fileConfig interpolates its defaults, so a % in the folder name must be doubled.
    defaults = {"logdir": str(log_dir).replace("%", "%%")}
    try:
        logging.config.fileConfig(path, defaults=defaults, disable_existing_loggers=False, encoding="utf-8-sig")
    except Exception as exc:  # fileConfig evaluates the file: any error it raises means the file is unusable
        if (denied := _denied(exc)) is not None:
            raise ConfigurationError(permission_refusal("log file", str(denied.filename), "written")) from exc
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigurationError(f"logging configuration {path} is not usable: {reason}") from exc


def progress_bar(iterable: Iterable[Item], description: str, unit: str, stream: TextIO | None = None,
                 total: int | None = None) -> Iterator[Item]:
    """`iterable` with a live progress bar on `stream` (stderr) when it is a terminal, with the rate and,
    given the `total`, the share done and the time left; silent otherwise, so cron mails and log files
    never fill with bar updates (and then not even wrapped: a million cases pay nothing for a bar unseen)."""
    options = _bar_options(description, unit, stream, total)
    return iter(iterable) if options["disable"] else tqdm(iterable, **options)


def progress_counter(description: str, unit: str, total: int, stream: TextIO | None = None) -> tqdm:
    """A progress bar shown as progress_bar shows it, advanced by hand (`update(n)`), for work done in
    pieces (a context manager)."""
    return tqdm(**_bar_options(description, unit, stream, total))


def _bar_options(description: str, unit: str, stream: TextIO | None, total: int | None) -> dict[str, Any]:
    stream = sys.stderr if stream is None else stream
    return {"desc": description, "unit": unit, "file": stream, "disable": not progress_shown(stream),
            "leave": False, "unit_scale": True, "mininterval": 0.5, "total": total}


def progress_shown(stream: TextIO | None = None) -> bool:
    """Whether progress bars are drawn on `stream` (stderr): only on a terminal."""
    return (sys.stderr if stream is None else stream).isatty()


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record comes (a test may have replaced it since)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def log_to_console(stream: TextIO | None = None, quiet: bool = False) -> None:
    """The job's INFO lines (warnings and errors only when `quiet`) on `stream` (stderr): for the tools an
    operator runs by hand and main.py --dry-run, which keep no log files. Nothing changes when logging is set
    up already."""
    logger = get_logger()
    if logger.handlers:
        return
    handler = logging.StreamHandler(stream) if stream is not None else _CurrentStderrHandler()
    if quiet:
        handler.setLevel(logging.WARNING)
    handler.setFormatter(IsoTimeFormatter("%(asctime)s %(levelname)s %(message)s"))
    handler.addFilter(SecretFilter())
    handler.addFilter(OneLineFilter(scrub))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def get_logger(name: str | None = None) -> logging.Logger:
    """The job's logger, or one of its children."""
    return logging.getLogger(LOGGER_NAME if name is None else f"{LOGGER_NAME}.{name}")
