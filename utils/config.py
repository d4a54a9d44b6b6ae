"""Reading the INI files under config/ and the environment variables that override them."""

import configparser
import os
from dataclasses import dataclass, field
from datetime import timedelta
from fractions import Fraction
from pathlib import Path

from utils.Custom_Exceptions import ConfigurationError
from utils.retry import RetryPolicy
from utils.secrets import redact_uri

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_DIR = PROJECT_ROOT / "config"
DEFAULT_LOG_DIR = PROJECT_ROOT / "logs"

DB_CONFIG_FILE = "DB_Config.ini"
TEMPLATE_CONFIG_FILE = "Set_Template_TaskID.ini"
JOB_CONFIG_FILE = "Job_Settings.ini"
LOGGING_CONFIG_FILE = "loggers.ini"

ENV_MONGO_URI = "DRS_MONGO_URI"
ENV_DB_NAME = "DRS_DB_NAME"

EMBEDDED_SCHEME = "embedded://"
SERVER_SCHEMES = ("mongodb://", "mongodb+srv://")

DEFAULT_SERVER_SELECTION_TIMEOUT_MS = 5000
DEFAULT_LOCK_TIMEOUT_SECONDS = 300
DEFAULT_MIN_SHARE_KEPT = Fraction(1, 5)
DEFAULT_LEASE = timedelta(minutes=30)
DEFAULT_CLOCK_SKEW = timedelta(minutes=5)

def read_ini(path):
    """Parse one INI file; a missing or unparsable file is a ConfigurationError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigurationError(f"configuration file {path} is missing")
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with path.open(encoding="utf-8") as handle:
            parser.read_file(handle)
    except (OSError, UnicodeDecodeError, configparser.Error) as exc:
        reason = str(exc).splitlines()[0]
        raise ConfigurationError(f"configuration file {path} cannot be read: {reason}") from exc
    return parser


def ini_value(parser, path, section, key, required=True):
    """One stripped value; a missing required section or key is a ConfigurationError."""
    if not parser.has_section(section):
        if not required:
            return None
        raise ConfigurationError(f"configuration file {path} has no [{section}] section")
    value = parser.get(section, key, fallback="").strip()
    if not value:
        if not required:
            return None
        raise ConfigurationError(f"configuration file {path}: [{section}] {key} is missing or empty")
    return value


def parse_int_setting(text, where, minimum):
    try:
        value = int(text)
    except ValueError:
        raise ConfigurationError(f"{where} must be an integer, got {text!r}") from None
    if value < minimum:
        raise ConfigurationError(f"{where} must be at least {minimum}, got {value}")
    return value


@dataclass(frozen=True)
class DatabaseSettings:
    uri: str
    db_name: str
    server_selection_timeout_ms: int = DEFAULT_SERVER_SELECTION_TIMEOUT_MS
    lock_timeout_seconds: int = DEFAULT_LOCK_TIMEOUT_SECONDS

    @property
    def is_embedded(self):
        return self.uri.startswith(EMBEDDED_SCHEME)

    @property
    def embedded_path(self):
        """The data file of an embedded:// URI, relative paths taken from the project root."""
        path = Path(self.uri[len(EMBEDDED_SCHEME):])
        return path if path.is_absolute() else PROJECT_ROOT / path

    @property
    def redacted_uri(self):
        return redact_uri(self.uri)

    def __repr__(self):
        return f"DatabaseSettings(uri={self.redacted_uri!r}, db_name={self.db_name!r})"


def load_database_settings(config_dir=DEFAULT_CONFIG_DIR, environ=None):
    """Settings of [DATABASE] in DB_Config.ini, with DRS_MONGO_URI and DRS_DB_NAME taking precedence."""
    environ = os.environ if environ is None else environ
    path = Path(config_dir) / DB_CONFIG_FILE
    parser = read_ini(path)
    uri = environ.get(ENV_MONGO_URI, "").strip() or ini_value(parser, path, "DATABASE", "MONGO_URI")
    db_name = environ.get(ENV_DB_NAME, "").strip() or ini_value(parser, path, "DATABASE", "DB_NAME")
    if uri.startswith(EMBEDDED_SCHEME):
        if not uri[len(EMBEDDED_SCHEME):].strip():
            raise ConfigurationError(f"MONGO_URI {uri!r} names no file: use embedded://PATH")
    elif not uri.startswith(SERVER_SCHEMES):
        raise ConfigurationError(
            f"MONGO_URI {redact_uri(uri)!r} is not supported: use mongodb://, mongodb+srv:// or embedded://PATH"
        )
    timeout = ini_value(parser, path, "DATABASE", "SERVER_SELECTION_TIMEOUT_MS", required=False)
    lock_timeout = ini_value(parser, path, "DATABASE", "LOCK_TIMEOUT_SECONDS", required=False)
    return DatabaseSettings(
        uri=uri,
        db_name=db_name,
        server_selection_timeout_ms=(
            parse_int_setting(timeout, f"{path}: [DATABASE] SERVER_SELECTION_TIMEOUT_MS", 1)
            if timeout else DEFAULT_SERVER_SELECTION_TIMEOUT_MS
        ),
        lock_timeout_seconds=(
            parse_int_setting(lock_timeout, f"{path}: [DATABASE] LOCK_TIMEOUT_SECONDS", 0)
            if lock_timeout else DEFAULT_LOCK_TIMEOUT_SECONDS
        ),
    )


def parse_share(text, where):
    """A share in [0, 1) read exactly (0.2 is 1/5, not a binary float)."""
    try:
        share = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise ConfigurationError(f"{where} must be a number such as 0.2, got {text!r}") from None
    if not 0 <= share < 1:
        raise ConfigurationError(f"{where} must be at least 0 and below 1, got {text!r}")
    return share


def parse_seconds(text, where):
    try:
        seconds = float(text)
    except ValueError:
        raise ConfigurationError(f"{where} must be a number of seconds, got {text!r}") from None
    if not 0 <= seconds <= 3600:
        raise ConfigurationError(f"{where} must be between 0 and 3600 seconds, got {text!r}")
    return seconds


@dataclass(frozen=True)
class JobSettings:
    """Everything a run needs besides the database: the template and the rules of Job_Settings.ini."""
    template_task_id: int
    min_share_kept: Fraction = DEFAULT_MIN_SHARE_KEPT
    lease: timedelta = DEFAULT_LEASE
    clock_skew: timedelta = DEFAULT_CLOCK_SKEW
    retry: RetryPolicy = field(default_factory=RetryPolicy)


def load_job_settings(template_task_id, config_dir=DEFAULT_CONFIG_DIR):
    """Job_Settings.ini: every section and key is optional; absent ones take the documented defaults.

    [BALANCING] MIN_SHARE_KEPT (0.2), [RECOVERY] LEASE_MINUTES (30),
    [RETRY] ATTEMPTS (5), INITIAL_DELAY_SECONDS (0.5), MAX_DELAY_SECONDS (8).
    """
    path = Path(config_dir) / JOB_CONFIG_FILE
    if not path.exists():
        return JobSettings(template_task_id)
    parser = read_ini(path)

    def value(section, key):
        return ini_value(parser, path, section, key, required=False)

    def where(section, key):
        return f"{path}: [{section}] {key}"

    defaults = RetryPolicy()
    share = value("BALANCING", "MIN_SHARE_KEPT")
    lease = value("RECOVERY", "LEASE_MINUTES")
    attempts = value("RETRY", "ATTEMPTS")
    initial = value("RETRY", "INITIAL_DELAY_SECONDS")
    maximum = value("RETRY", "MAX_DELAY_SECONDS")
    return JobSettings(
        template_task_id=template_task_id,
        min_share_kept=parse_share(share, where("BALANCING", "MIN_SHARE_KEPT")) if share else DEFAULT_MIN_SHARE_KEPT,
        lease=(timedelta(minutes=parse_int_setting(lease, where("RECOVERY", "LEASE_MINUTES"), 1))
               if lease else DEFAULT_LEASE),
        retry=RetryPolicy(
            attempts=parse_int_setting(attempts, where("RETRY", "ATTEMPTS"), 1) if attempts else defaults.attempts,
            initial_delay_seconds=(parse_seconds(initial, where("RETRY", "INITIAL_DELAY_SECONDS"))
                                   if initial else defaults.initial_delay_seconds),
            max_delay_seconds=(parse_seconds(maximum, where("RETRY", "MAX_DELAY_SECONDS"))
                               if maximum else defaults.max_delay_seconds),
        ),
    )
