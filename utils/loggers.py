"""Logging set up from config/loggers.ini (logging.config.fileConfig)."""

import logging
import logging.config
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO, TypeVar

from tqdm import tqdm

from utils.config import DEFAULT_CONFIG_DIR, DEFAULT_LOG_DIR, LOGGING_CONFIG_FILE
from utils.Custom_Exceptions import ConfigurationError
from utils.one_line import OneLineFilter
from utils.secrets import SecretFilter, scrub

LOGGER_NAME = "drs_amend"
Item = TypeVar("Item")


def setup_logging(config_dir: Path = DEFAULT_CONFIG_DIR, log_dir: Path = DEFAULT_LOG_DIR, quiet: bool = False) -> None:
    """Apply loggers.ini; its handlers may write under %(logdir)s, created here when missing. `quiet`: the
    console (any handler that is not a file) shows warnings and errors only; the files keep everything."""
    path = Path(config_dir) / LOGGING_CONFIG_FILE
    if not path.is_file():
        raise ConfigurationError(f"logging configuration {path} is missing")
    log_dir = Path(log_dir)
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(f"log folder {log_dir} cannot be created: {exc.strerror}") from exc
    # fileConfig interpolates its defaults, so a % in the folder name must be doubled.
    defaults = {"logdir": str(log_dir).replace("%", "%%")}
    try:
        logging.config.fileConfig(path, defaults=defaults, disable_existing_loggers=False, encoding="utf-8-sig")
    except Exception as exc:  # fileConfig evaluates the file: any error it raises means the file is unusable
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigurationError(f"logging configuration {path} is not usable: {reason}") from exc
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


def progress_bar(iterable: Iterable[Item], description: str, unit: str, stream: TextIO | None = None,
                 total: int | None = None) -> Iterator[Item]:
    """`iterable` with a live progress bar on `stream` (stderr) when it is a terminal, with the rate and,
    given the `total`, the share done and the time left; silent otherwise, so cron mails and log files
    never fill with bar updates."""
    return tqdm(iterable, **_bar_options(description, unit, stream, total))


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


def log_to_console(stream: TextIO | None = None) -> None:
    """The job's INFO lines on `stream` (stderr): for the tools an operator runs by hand, which keep no
    log files. Nothing changes when logging is set up already."""
    logger = get_logger()
    if logger.handlers:
        return
    handler = logging.StreamHandler(stream) if stream is not None else _CurrentStderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    handler.addFilter(SecretFilter())
    handler.addFilter(OneLineFilter(scrub))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def get_logger(name: str | None = None) -> logging.Logger:
    """The job's logger, or one of its children."""
    return logging.getLogger(LOGGER_NAME if name is None else f"{LOGGER_NAME}.{name}")
