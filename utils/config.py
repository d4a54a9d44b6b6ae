"""The job's configuration: the INI files under config/ and the environment variables that override
them, read once by load_config into one immutable Settings object."""

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from fractions import Fraction
from pathlib import Path

from pymongo import uri_parser
from pymongo.errors import ConfigurationError as PyMongoConfigurationError

from balance_resources import DEFAULT_MIN_SHARE_KEPT
from utils.Custom_Exceptions import ConfigurationError
from utils.ini_files import IniFile, IniSchema, parse_float_setting, parse_int_setting, read_ini
from utils.read_template_task_id_ini import TEMPLATE_CONFIG_FILE, TEMPLATE_SCHEMA, read_template_task_id
from utils.retry import RetryPolicy
from utils.secrets import check_uri_userinfo, redact_uri, register_secret, register_uri_secrets, scrub

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_DIR = PROJECT_ROOT / "config"
DEFAULT_LOG_DIR = PROJECT_ROOT / "logs"

DB_CONFIG_FILE = "DB_Config.ini"
JOB_CONFIG_FILE = "Job_Settings.ini"
LOGGING_CONFIG_FILE = "loggers.ini"
MONITOR_CONFIG_FILE = "monitor.ini"
ALERTS_CONFIG_FILE = "alerts.ini"
CONFIG_FILES = (DB_CONFIG_FILE, TEMPLATE_CONFIG_FILE, JOB_CONFIG_FILE, LOGGING_CONFIG_FILE, MONITOR_CONFIG_FILE,
                ALERTS_CONFIG_FILE)

ENV_MONGO_URI = "DRS_MONGO_URI"
ENV_DB_NAME = "DRS_DB_NAME"

EMBEDDED_SCHEME = "embedded://"
SERVER_SCHEMES = ("mongodb://", "mongodb+srv://")

DEFAULT_SERVER_SELECTION_TIMEOUT_MS = 5000
DEFAULT_LOCK_TIMEOUT_SECONDS = 300
DEFAULT_LEASE = timedelta(minutes=30)
DEFAULT_CLOCK_SKEW = timedelta(minutes=5)
# Upper bounds: a value beyond them is a typo, and would overflow a date or wait for years.
MAX_SERVER_SELECTION_TIMEOUT_MS = 600_000
MAX_LOCK_TIMEOUT_SECONDS = 86_400
MAX_LEASE_MINUTES = 10_080
MAX_RUN_MINUTES = 10_080
MAX_RETENTION_DAYS = 36_500
MAX_CLOCK_SKEW_SECONDS = 3_600
MAX_RETRY_ATTEMPTS = 100
MAX_DELAY_SECONDS = 3_600
# URI options only a mongodb+srv:// URI may carry; removed before its syntax is checked as a mongodb:// one.
SRV_ONLY_OPTIONS = ("srvservicename", "srvmaxhosts")

@dataclass(frozen=True)
class DatabaseSettings:
    uri: str
    db_name: str
    server_selection_timeout_ms: int = DEFAULT_SERVER_SELECTION_TIMEOUT_MS
    lock_timeout_seconds: int = DEFAULT_LOCK_TIMEOUT_SECONDS

    @property
    def is_embedded(self) -> bool:
        return self.uri.startswith(EMBEDDED_SCHEME)

    @property
    def embedded_path(self) -> Path:
        """The data file of an embedded:// URI, relative paths taken from the project root."""
        path = Path(self.uri[len(EMBEDDED_SCHEME):])
        return path if path.is_absolute() else PROJECT_ROOT / path

    @property
    def redacted_uri(self) -> str:
        return redact_uri(self.uri)

    def __repr__(self) -> str:
        return f"DatabaseSettings(uri={self.redacted_uri!r}, db_name={self.db_name!r})"


def _without_srv_only_options(uri: str) -> str:
    base, mark, query = uri.partition("?")
    kept = [option for option in query.split("&") if option.partition("=")[0].lower() not in SRV_ONLY_OPTIONS]
    return base + (mark + "&".join(kept) if mark else "")


# What MongoDB refuses in a database name (and 64 bytes at most).
_BAD_DATABASE_NAME_CHARACTERS = set('/\\. "$*<>:|?\0')


def check_database_name(name: str, where: str) -> None:
    bad = sorted(_BAD_DATABASE_NAME_CHARACTERS & set(name))
    if bad:
        raise ConfigurationError(f"{where} {name[:64]!r} holds {', '.join(map(repr, bad))}, which MongoDB refuses "
                                 f"in a database name")
    if len(name.encode()) > 63:
        raise ConfigurationError(f"{where} is longer than the 63 bytes MongoDB allows in a database name")


def check_server_uri(uri: str, where: str) -> None:
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


DATABASE_SCHEMA: IniSchema = {"DATABASE": ("MONGO_URI", "DB_NAME", "SERVER_SELECTION_TIMEOUT_MS",
                                             "LOCK_TIMEOUT_SECONDS")}


def environment_override(environ: Mapping[str, str], variable: str, instead: str) -> str | None:
    """The stripped value of `variable`; None when it is not set. Set but blank is a mistake, not a
    silent fall back on `instead` (what is used when it is unset)."""
    if variable not in environ:
        return None
    value = environ[variable].strip()
    if not value:
        raise ConfigurationError(f"environment variable {variable} is set but empty: give it a value, or unset it "
                                 f"to use {instead}")
    return value


def load_database_settings(config_dir: Path, environ: Mapping[str, str]) -> DatabaseSettings:
    """Settings of [DATABASE] in DB_Config.ini, with DRS_MONGO_URI and DRS_DB_NAME taking precedence
    (either set but blank is an error).

    The URI's password is registered as a secret as soon as it is read (utils.secrets).
    """
    ini = read_ini(Path(config_dir) / DB_CONFIG_FILE, DATABASE_SCHEMA, required_sections=("DATABASE",))
    from_environment = environment_override(environ, ENV_MONGO_URI, f"[DATABASE] MONGO_URI of {ini.path} (the "
                                                                    f"embedded default as shipped)")
    uri = from_environment or ini.value("DATABASE", "MONGO_URI") or ""
    register_uri_secrets(uri)
    where = f"environment variable {ENV_MONGO_URI}" if from_environment else ini.where("DATABASE", "MONGO_URI")
    db_name_from_environment = environment_override(environ, ENV_DB_NAME, f"[DATABASE] DB_NAME of {ini.path}")
    db_name = db_name_from_environment or ini.value("DATABASE", "DB_NAME") or ""
    check_database_name(db_name, f"environment variable {ENV_DB_NAME}" if db_name_from_environment
                        else ini.where("DATABASE", "DB_NAME"))
    if uri.startswith(EMBEDDED_SCHEME):
        if not uri[len(EMBEDDED_SCHEME):].strip():
            raise ConfigurationError(f"{where} {uri!r} names no file: use embedded://PATH")
    elif uri.startswith(SERVER_SCHEMES):
        check_server_uri(uri, where)
    else:
        raise ConfigurationError(
            f"{where} {redact_uri(uri)!r} is not supported: use mongodb://, mongodb+srv:// or embedded://PATH")
    timeout = ini.value("DATABASE", "SERVER_SELECTION_TIMEOUT_MS", required=False)
    lock_timeout = ini.value("DATABASE", "LOCK_TIMEOUT_SECONDS", required=False)
    return DatabaseSettings(
        uri=uri,
        db_name=db_name,
        server_selection_timeout_ms=(
            parse_int_setting(timeout, ini.where("DATABASE", "SERVER_SELECTION_TIMEOUT_MS"), 1,
                              MAX_SERVER_SELECTION_TIMEOUT_MS)
            if timeout else DEFAULT_SERVER_SELECTION_TIMEOUT_MS
        ),
        lock_timeout_seconds=(
            parse_int_setting(lock_timeout, ini.where("DATABASE", "LOCK_TIMEOUT_SECONDS"), 0,
                              MAX_LOCK_TIMEOUT_SECONDS)
            if lock_timeout else DEFAULT_LOCK_TIMEOUT_SECONDS
        ),
    )


# A share as written by people: 0.2, 1/5. No exponent, whose digits could run into the billions.
_SHARE_TEXT = re.compile(r"[+-]?([0-9]{1,12}(\.[0-9]{1,12})?|[0-9]{1,12}/[0-9]{1,12})")


def parse_share(text: str, where: str) -> Fraction:
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


def parse_seconds(text: str, where: str) -> float:
    return parse_float_setting(text, where, 0, MAX_DELAY_SECONDS, kind="a number of seconds")


@dataclass(frozen=True)
class JobSettings:
    """Everything a run needs besides the database: the template and the rules of Job_Settings.ini."""
    template_task_id: int
    min_share_kept: Fraction = DEFAULT_MIN_SHARE_KEPT
    lease: timedelta = DEFAULT_LEASE
    clock_skew: timedelta = DEFAULT_CLOCK_SKEW
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_minutes: int | None = None  # no new task is claimed after this many minutes of a run
    metrics_textfile: Path | None = None  # the node_exporter textfile written after every run
    history_retention_days: int | None = None  # Run_History documents older than this are removed


JOB_SCHEMA: IniSchema = {"BALANCING": ("MIN_SHARE_KEPT",), "RECOVERY": ("LEASE_MINUTES", "MAX_CLOCK_SKEW_SECONDS"),
                         "RETRY": ("ATTEMPTS", "INITIAL_DELAY_SECONDS", "MAX_DELAY_SECONDS"), "RUN": ("MAX_MINUTES",),
                         "METRICS": ("TEXTFILE",), "HISTORY": ("RETENTION_DAYS",)}


def load_job_settings(template_task_id: int, config_dir: Path) -> JobSettings:
    """Job_Settings.ini: every section and key is optional; absent ones take the documented defaults.

    [BALANCING] MIN_SHARE_KEPT (0.2), [RECOVERY] LEASE_MINUTES (30), MAX_CLOCK_SKEW_SECONDS (300),
    [RETRY] ATTEMPTS (5), INITIAL_DELAY_SECONDS (0.5), MAX_DELAY_SECONDS (8), [RUN] MAX_MINUTES (no limit),
    [METRICS] TEXTFILE (none), [HISTORY] RETENTION_DAYS (kept for ever).
    """
    path = Path(config_dir) / JOB_CONFIG_FILE
    if not path.exists():
        return JobSettings(template_task_id)
    ini = read_ini(path, JOB_SCHEMA)

    def value(section: str, key: str) -> str | None:
        return ini.value(section, key, required=False)

    where = ini.where

    defaults = RetryPolicy()
    share = value("BALANCING", "MIN_SHARE_KEPT")
    lease = value("RECOVERY", "LEASE_MINUTES")
    skew = value("RECOVERY", "MAX_CLOCK_SKEW_SECONDS")
    attempts = value("RETRY", "ATTEMPTS")
    initial = value("RETRY", "INITIAL_DELAY_SECONDS")
    maximum = value("RETRY", "MAX_DELAY_SECONDS")
    max_minutes = value("RUN", "MAX_MINUTES")
    textfile = value("METRICS", "TEXTFILE")
    retention = value("HISTORY", "RETENTION_DAYS")
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
        max_minutes=(parse_int_setting(max_minutes, where("RUN", "MAX_MINUTES"), 1, MAX_RUN_MINUTES)
                     if max_minutes else None),
        metrics_textfile=parse_textfile(textfile, where("METRICS", "TEXTFILE")) if textfile else None,
        history_retention_days=(parse_int_setting(retention, where("HISTORY", "RETENTION_DAYS"), 1,
                                                  MAX_RETENTION_DAYS) if retention else None),
    )


def parse_textfile(text: str, where: str) -> Path:
    """A node_exporter textfile path (relative to the project unless absolute); the collector reads only
    files named *.prom."""
    path = Path(text)
    if path.suffix != ".prom":
        raise ConfigurationError(f"{where} must name a file ending in .prom (the only files node_exporter's "
                                 f"textfile collector reads), got {text[:80]!r}")
    return path if path.is_absolute() else PROJECT_ROOT / path


# --- monitor.ini: the thresholds of batch_monitor.py check ---------------------------------

@dataclass(frozen=True)
class Thresholds:
    window_hours: int = 24
    failure_rate_warning: float = 0.1
    failure_rate_critical: float = 0.5
    last_success_warning_hours: float = 2
    last_success_critical_hours: float = 6
    stuck_tasks_warning: int = 1
    stuck_tasks_critical: int = 3
    # The last run's seconds per 1,000 cases against the median of the window's earlier runs
    slowdown_warning: float = 3
    slowdown_critical: float = 10
    comparable_runs: int = 5  # fewer earlier comparable runs in the window: not judged
    comparable_cases: int = 10_000  # a run of fewer cases is not compared: its fixed costs dominate
    # The backlog: open amend tasks, and how long the oldest has waited (a run every 10 minutes takes them)
    open_tasks_warning: int = 100
    open_tasks_critical: int = 1000
    oldest_open_warning_hours: float = 1
    oldest_open_critical_hours: float = 6


# (name, parse as integer, lower bound, upper bound) of each [CHECK] key of monitor.ini
THRESHOLD_KEYS = (("window_hours", True, 1, 8760), ("failure_rate_warning", False, 0, 1),
                  ("failure_rate_critical", False, 0, 1), ("last_success_warning_hours", False, 0, 8760),
                  ("last_success_critical_hours", False, 0, 8760), ("stuck_tasks_warning", True, 0, 1_000_000),
                  ("stuck_tasks_critical", True, 0, 1_000_000), ("slowdown_warning", False, 1, 1_000_000),
                  ("slowdown_critical", False, 1, 1_000_000), ("comparable_runs", True, 1, 10_000),
                  ("comparable_cases", True, 1, 10**9), ("open_tasks_warning", True, 0, 10**9),
                  ("open_tasks_critical", True, 0, 10**9), ("oldest_open_warning_hours", False, 0, 87600),
                  ("oldest_open_critical_hours", False, 0, 87600))


MONITOR_SCHEMA: IniSchema = {"CHECK": tuple(name.upper() for name, *_ in THRESHOLD_KEYS)}


def load_thresholds(config_dir: Path) -> Thresholds:
    """[CHECK] of monitor.ini; every key optional, each within its bounds, no warning above its critical."""
    path = Path(config_dir) / MONITOR_CONFIG_FILE
    if not path.exists():
        return Thresholds()
    ini = read_ini(path, MONITOR_SCHEMA)
    values: dict[str, float] = {}
    for name, integral, minimum, maximum in THRESHOLD_KEYS:
        text = ini.value("CHECK", name.upper(), required=False)
        if text is None:
            continue
        where = ini.where("CHECK", name.upper())
        values[name] = (parse_int_setting(text, where, int(minimum), int(maximum)) if integral
                        else parse_float_setting(text, where, minimum, maximum))
    thresholds = Thresholds(**values)  # type: ignore[arg-type]
    for figure in ("failure_rate", "last_success", "stuck_tasks", "slowdown", "open_tasks", "oldest_open"):
        warning, critical = (name for name, *_ in THRESHOLD_KEYS if name.startswith(figure))
        if getattr(thresholds, warning) > getattr(thresholds, critical):
            raise ConfigurationError(f"{path}: [CHECK] {warning.upper()} ({getattr(thresholds, warning)}) is above "
                                     f"{critical.upper()} ({getattr(thresholds, critical)})")
    return thresholds


# --- alerts.ini: optional e-mail alerts ---------------------------------------------------

@dataclass(frozen=True)
class AlertSettings:
    host: str
    port: int
    sender: str
    recipients: tuple[str, ...]
    starttls: bool
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None

    def __repr__(self) -> str:
        return f"AlertSettings(host={self.host!r}, port={self.port}, recipients={self.recipients!r})"


def _flag(text: str | None, where: str) -> bool:
    value = (text or "no").strip().lower()
    if value not in ("yes", "no", "true", "false", "1", "0", "on", "off"):
        raise ConfigurationError(f"{where} must be yes or no, got {text!r}")
    return value in ("yes", "true", "1", "on")


def _credential(path: Path, key: str, variable: str | None, environ: Mapping[str, str]) -> str | None:
    """The value of the environment variable [SMTP] `key` names (None when it names none)."""
    if not variable:
        return None
    if not environ.get(variable):
        raise ConfigurationError(f"{path}: [SMTP] {key} names the environment variable {variable}, which is not set")
    return environ[variable]


ALERTS_SCHEMA: IniSchema = {"SMTP": ("ENABLED", "HOST", "PORT", "SENDER", "RECIPIENTS", "STARTTLS", "CA_FILE",
                                     "USERNAME_ENV", "PASSWORD_ENV")}


def load_alert_settings(config_dir: Path, environ: Mapping[str, str]) -> AlertSettings | None:
    """The [SMTP] section of alerts.ini; None when the file is absent or ENABLED is not yes.
    Credentials come from the environment variables the file names; the password is registered
    as a secret."""
    path = Path(config_dir) / ALERTS_CONFIG_FILE
    if not path.exists():
        return None
    ini = read_ini(path, ALERTS_SCHEMA)

    def value(key: str, required: bool = True) -> str | None:
        return ini.value("SMTP", key, required=required)

    if not _flag(value("ENABLED", required=False), f"{path}: [SMTP] ENABLED"):
        return None
    recipients = tuple(r.strip() for r in (value("RECIPIENTS") or "").split(",") if r.strip())
    if not recipients:
        raise ConfigurationError(f"{path}: [SMTP] RECIPIENTS names no address")
    credentials = [_credential(path, key, value(key, required=False), environ) for key in ("USERNAME_ENV",
                                                                                          "PASSWORD_ENV")]
    if credentials[1]:
        register_secret(credentials[1])
    ca_file = value("CA_FILE", required=False)
    if ca_file and not Path(ca_file).is_file():
        raise ConfigurationError(f"{path}: [SMTP] CA_FILE {ca_file} is not a file")
    return AlertSettings(
        host=value("HOST") or "", port=parse_int_setting(value("PORT") or "", f"{path}: [SMTP] PORT", 1, 65535),
        sender=value("SENDER") or "", recipients=recipients,
        starttls=_flag(value("STARTTLS", required=False), f"{path}: [SMTP] STARTTLS"),
        username=credentials[0], password=credentials[1], ca_file=ca_file)


# --- everything at once ---------------------------------------------------------------------

# The sections and keys each INI file may hold; any other is refused (loggers.ini is logging.config's own format).
INI_SCHEMAS: dict[str, IniSchema] = {DB_CONFIG_FILE: DATABASE_SCHEMA, TEMPLATE_CONFIG_FILE: TEMPLATE_SCHEMA,
                                     JOB_CONFIG_FILE: JOB_SCHEMA, MONITOR_CONFIG_FILE: MONITOR_SCHEMA,
                                     ALERTS_CONFIG_FILE: ALERTS_SCHEMA}


@dataclass(frozen=True)
class Settings:
    """Every setting of the job, read once."""
    database: DatabaseSettings
    job: JobSettings
    thresholds: Thresholds
    alerts: AlertSettings | None


def load_config(config_dir: Path = DEFAULT_CONFIG_DIR, environ: Mapping[str, str] | None = None) -> Settings:
    """Read every configuration file of `config_dir` and the environment variables that override them.

    Any mistake is a ConfigurationError naming the file and key (or the variable), a section or key
    INI_SCHEMAS does not hold among them; secrets are registered for scrubbing as soon as they are read.
    loggers.ini is applied separately, by utils.loggers.setup_logging.
    """
    environ = os.environ if environ is None else environ
    config_dir = Path(config_dir)
    return Settings(database=load_database_settings(config_dir, environ),
                    job=load_job_settings(read_template_task_id(config_dir), config_dir),
                    thresholds=load_thresholds(config_dir),
                    alerts=load_alert_settings(config_dir, environ))


# --- where each setting comes from (batch_monitor.py config) -------------------------------

# The environment variables that take precedence over a key of an INI file (load_database_settings).
ENVIRONMENT_OVERRIDES = {"MONGO_URI": ENV_MONGO_URI, "DB_NAME": ENV_DB_NAME}
# The keys of alerts.ini that name the environment variable holding a credential (_credential).
CREDENTIAL_KEYS = ("USERNAME_ENV", "PASSWORD_ENV")
ALERTS_OFF = "not used: alerts are off"

SettingValue = str | int | float | bool | list[str] | None


def _alert(pick: Callable[[AlertSettings], SettingValue]) -> Callable[[Settings], SettingValue]:
    """The value of an [SMTP] key: None while alerts are off."""
    return lambda settings: None if settings.alerts is None else pick(settings.alerts)


def _threshold(name: str) -> Callable[[Settings], SettingValue]:
    """The value of a [CHECK] key of monitor.ini."""
    return lambda settings: getattr(settings.thresholds, name)


def _hidden(secret: str | None) -> str | None:
    return None if secret is None else "***"


# The effective value of each key INI_SCHEMAS declares (keys are unique across the files), secrets as ***.
SETTING_VALUES: dict[str, Callable[[Settings], SettingValue]] = {
    "MONGO_URI": lambda settings: settings.database.redacted_uri,
    "DB_NAME": lambda settings: settings.database.db_name,
    "SERVER_SELECTION_TIMEOUT_MS": lambda settings: settings.database.server_selection_timeout_ms,
    "LOCK_TIMEOUT_SECONDS": lambda settings: settings.database.lock_timeout_seconds,
    "TEMPLATE_TASK_ID": lambda settings: settings.job.template_task_id,
    "MIN_SHARE_KEPT": lambda settings: float(settings.job.min_share_kept),
    "LEASE_MINUTES": lambda settings: settings.job.lease // timedelta(minutes=1),
    "MAX_CLOCK_SKEW_SECONDS": lambda settings: settings.job.clock_skew // timedelta(seconds=1),
    "ATTEMPTS": lambda settings: settings.job.retry.attempts,
    "INITIAL_DELAY_SECONDS": lambda settings: settings.job.retry.initial_delay_seconds,
    "MAX_DELAY_SECONDS": lambda settings: settings.job.retry.max_delay_seconds,
    "MAX_MINUTES": lambda settings: settings.job.max_minutes,
    "TEXTFILE": lambda settings: None if settings.job.metrics_textfile is None else str(settings.job.metrics_textfile),
    "RETENTION_DAYS": lambda settings: settings.job.history_retention_days,
    **{name.upper(): _threshold(name) for name, *_ in THRESHOLD_KEYS},
    "ENABLED": lambda settings: settings.alerts is not None,
    "HOST": _alert(lambda alerts: alerts.host),
    "PORT": _alert(lambda alerts: alerts.port),
    "SENDER": _alert(lambda alerts: alerts.sender),
    "RECIPIENTS": _alert(lambda alerts: list(alerts.recipients)),
    "STARTTLS": _alert(lambda alerts: alerts.starttls),
    "CA_FILE": _alert(lambda alerts: alerts.ca_file),
    "USERNAME_ENV": _alert(lambda alerts: _hidden(alerts.username)),
    "PASSWORD_ENV": _alert(lambda alerts: _hidden(alerts.password)),
}


@dataclass(frozen=True)
class SettingSource:
    """One setting as `batch_monitor.py config` shows it: its key, its effective value, where that comes from."""
    setting: str  # [SECTION] KEY
    value: SettingValue
    source: str  # environment VARIABLE, file PATH [SECTION] KEY, default, or why it is not used


def shown_path(path: Path) -> Path:
    """A path as an operator reads it: relative to the project when it lies in it."""
    absolute = path.resolve()
    return absolute.relative_to(PROJECT_ROOT) if absolute.is_relative_to(PROJECT_ROOT) else path


def _source(ini: IniFile | None, section: str, key: str, environ: Mapping[str, str], alerts_on: bool) -> str:
    """Where the value of one key comes from, read as load_config reads it."""
    variable = ENVIRONMENT_OVERRIDES.get(key)
    if variable is not None and variable in environ:
        return f"environment {variable}"
    if key in ALERTS_SCHEMA["SMTP"] and key != "ENABLED" and not alerts_on:
        return ALERTS_OFF
    text = None if ini is None else ini.value(section, key, required=False)
    if ini is None or text is None:
        return "default"
    where = f"file {shown_path(ini.path)} [{section}] {key}"
    return f"environment {text} (named by {where})" if key in CREDENTIAL_KEYS else where


def setting_sources(settings: Settings, config_dir: Path = DEFAULT_CONFIG_DIR,
                    environ: Mapping[str, str] | None = None) -> list[SettingSource]:
    """Every key of INI_SCHEMAS, in their order, with its value in `settings` (load_config's of the same folder
    and environment) and where that comes from; the INI files are read again for it."""
    environ = os.environ if environ is None else environ
    found = []
    for name, schema in INI_SCHEMAS.items():
        path = Path(config_dir) / name
        ini = read_ini(path, schema) if path.is_file() else None
        found += [SettingSource(f"[{section}] {key}", SETTING_VALUES[key](settings),
                                _source(ini, section, key, environ, settings.alerts is not None))
                  for section, keys in schema.items() for key in keys]
    return found
