"""Reading the INI files under config/ and the environment variables that override them."""

import configparser
import math
import os
import re
from dataclasses import dataclass, field
from datetime import timedelta
from fractions import Fraction
from pathlib import Path

from pymongo import uri_parser
from pymongo.errors import ConfigurationError as PyMongoConfigurationError

from utils.Custom_Exceptions import ConfigurationError
from utils.retry import RetryPolicy
from utils.secrets import check_uri_userinfo, redact_uri, register_uri_secrets, scrub

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
INT64_MAX = 2**63 - 1
# Upper bounds: a value beyond them is a typo, and would overflow a date or wait for years.
MAX_SERVER_SELECTION_TIMEOUT_MS = 600_000
MAX_LOCK_TIMEOUT_SECONDS = 86_400
MAX_LEASE_MINUTES = 10_080
MAX_CLOCK_SKEW_SECONDS = 3_600
MAX_RETRY_ATTEMPTS = 100
MAX_DELAY_SECONDS = 3_600
# URI options only a mongodb+srv:// URI may carry; removed before its syntax is checked as a mongodb:// one.
SRV_ONLY_OPTIONS = ("srvservicename", "srvmaxhosts")

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


def parse_int_setting(text, where, minimum, maximum=INT64_MAX):
    """An integer within [minimum, maximum]; anything else is a ConfigurationError naming `where`."""
    try:
        value = int(text)
    except ValueError:
        raise ConfigurationError(f"{where} must be an integer, got {text[:40]!r}") from None
    if value < minimum:
        raise ConfigurationError(f"{where} must be at least {minimum}, got {value}")
    if value > maximum:
        raise ConfigurationError(f"{where} must be at most {maximum}, got {text[:40]}")
    return value


def parse_float_setting(text, where, minimum, maximum, kind="a number"):
    """A finite number within [minimum, maximum] (nan and inf are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise ConfigurationError(f"{where} must be {kind}, got {text[:40]!r}") from None
    if not (math.isfinite(value) and minimum <= value <= maximum):
        raise ConfigurationError(f"{where} must be between {minimum:g} and {maximum:g}, got {text[:40]}")
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


def _without_srv_only_options(uri):
    base, mark, query = uri.partition("?")
    kept = [option for option in query.split("&") if option.partition("=")[0].lower() not in SRV_ONLY_OPTIONS]
    return base + (mark + "&".join(kept) if mark else "")


# What MongoDB refuses in a database name (and 64 bytes at most).
_BAD_DATABASE_NAME_CHARACTERS = set('/\\. "$*<>:|?\0')


def check_database_name(name, where):
    bad = sorted(_BAD_DATABASE_NAME_CHARACTERS & set(name))
    if bad:
        raise ConfigurationError(f"{where} {name[:64]!r} holds {', '.join(map(repr, bad))}, which MongoDB refuses "
                                 f"in a database name")
    if len(name.encode()) > 63:
        raise ConfigurationError(f"{where} is longer than the 63 bytes MongoDB allows in a database name")


def check_server_uri(uri, where):
    """A mongodb:// or mongodb+srv:// URI pymongo accepts: user information escaped, hosts, ports and
    options valid. Checked without connecting (and without the DNS lookup of a mongodb+srv:// URI)."""
    problem = check_uri_userinfo(uri)
    if problem:
        raise ConfigurationError(f"{where} {redact_uri(uri)!r} is not valid: {problem}")
    plain = uri if uri.startswith("mongodb://") else "mongodb://" + _without_srv_only_options(uri.split("://", 1)[1])
    try:
        uri_parser.parse_uri(plain)
    except (PyMongoConfigurationError, ValueError) as exc:
        raise ConfigurationError(f"{where} {redact_uri(uri)!r} is not valid: {scrub(exc)}") from None


def load_database_settings(config_dir=DEFAULT_CONFIG_DIR, environ=None):
    """Settings of [DATABASE] in DB_Config.ini, with DRS_MONGO_URI and DRS_DB_NAME taking precedence.

    The URI's password is registered as a secret as soon as it is read (utils.secrets).
    """
    environ = os.environ if environ is None else environ
    path = Path(config_dir) / DB_CONFIG_FILE
    parser = read_ini(path)
    from_environment = environ.get(ENV_MONGO_URI, "").strip()
    uri = from_environment or ini_value(parser, path, "DATABASE", "MONGO_URI")
    register_uri_secrets(uri)
    where = f"environment variable {ENV_MONGO_URI}" if from_environment else f"{path}: [DATABASE] MONGO_URI"
    db_name_from_environment = environ.get(ENV_DB_NAME, "").strip()
    db_name = db_name_from_environment or ini_value(parser, path, "DATABASE", "DB_NAME")
    check_database_name(db_name, f"environment variable {ENV_DB_NAME}" if db_name_from_environment
                        else f"{path}: [DATABASE] DB_NAME")
    if uri.startswith(EMBEDDED_SCHEME):
        if not uri[len(EMBEDDED_SCHEME):].strip():
            raise ConfigurationError(f"{where} {uri!r} names no file: use embedded://PATH")
    elif uri.startswith(SERVER_SCHEMES):
        check_server_uri(uri, where)
    else:
        raise ConfigurationError(
            f"{where} {redact_uri(uri)!r} is not supported: use mongodb://, mongodb+srv:// or embedded://PATH")
    timeout = ini_value(parser, path, "DATABASE", "SERVER_SELECTION_TIMEOUT_MS", required=False)
    lock_timeout = ini_value(parser, path, "DATABASE", "LOCK_TIMEOUT_SECONDS", required=False)
    return DatabaseSettings(
        uri=uri,
        db_name=db_name,
        server_selection_timeout_ms=(
            parse_int_setting(timeout, f"{path}: [DATABASE] SERVER_SELECTION_TIMEOUT_MS", 1,
                              MAX_SERVER_SELECTION_TIMEOUT_MS)
            if timeout else DEFAULT_SERVER_SELECTION_TIMEOUT_MS
        ),
        lock_timeout_seconds=(
            parse_int_setting(lock_timeout, f"{path}: [DATABASE] LOCK_TIMEOUT_SECONDS", 0, MAX_LOCK_TIMEOUT_SECONDS)
            if lock_timeout else DEFAULT_LOCK_TIMEOUT_SECONDS
        ),
    )


# A share as written by people: 0.2, 1/5. No exponent, whose digits could run into the billions.
_SHARE_TEXT = re.compile(r"[+-]?([0-9]{1,12}(\.[0-9]{1,12})?|[0-9]{1,12}/[0-9]{1,12})")


def parse_share(text, where):
    """A share in [0, 1) read exactly (0.2 is 1/5, not a binary float)."""
    try:
        share = Fraction(text) if _SHARE_TEXT.fullmatch(text) else None
    except ZeroDivisionError:
        share = None
    if share is None:
        raise ConfigurationError(f"{where} must be a number such as 0.2, got {text[:40]!r} (a fraction such as "
                                 f"1/5 is read too)")
    if not 0 <= share < 1:
        raise ConfigurationError(f"{where} must be at least 0 and below 1, got {text!r}")
    return share


def parse_seconds(text, where):
    return parse_float_setting(text, where, 0, MAX_DELAY_SECONDS, kind="a number of seconds")


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

    [BALANCING] MIN_SHARE_KEPT (0.2), [RECOVERY] LEASE_MINUTES (30), MAX_CLOCK_SKEW_SECONDS (300),
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
    skew = value("RECOVERY", "MAX_CLOCK_SKEW_SECONDS")
    attempts = value("RETRY", "ATTEMPTS")
    initial = value("RETRY", "INITIAL_DELAY_SECONDS")
    maximum = value("RETRY", "MAX_DELAY_SECONDS")
    return JobSettings(
        template_task_id=template_task_id,
        min_share_kept=parse_share(share, where("BALANCING", "MIN_SHARE_KEPT")) if share else DEFAULT_MIN_SHARE_KEPT,
        lease=(timedelta(minutes=parse_int_setting(lease, where("RECOVERY", "LEASE_MINUTES"), 1, MAX_LEASE_MINUTES))
               if lease else DEFAULT_LEASE),
        clock_skew=(timedelta(seconds=parse_int_setting(skew, where("RECOVERY", "MAX_CLOCK_SKEW_SECONDS"), 0,
                                                        MAX_CLOCK_SKEW_SECONDS)) if skew else DEFAULT_CLOCK_SKEW),
        retry=RetryPolicy(
            attempts=(parse_int_setting(attempts, where("RETRY", "ATTEMPTS"), 1, MAX_RETRY_ATTEMPTS)
                      if attempts else defaults.attempts),
            initial_delay_seconds=(parse_seconds(initial, where("RETRY", "INITIAL_DELAY_SECONDS"))
                                   if initial else defaults.initial_delay_seconds),
            max_delay_seconds=(parse_seconds(maximum, where("RETRY", "MAX_DELAY_SECONDS"))
                               if maximum else defaults.max_delay_seconds),
        ),
    )
