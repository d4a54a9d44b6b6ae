"""The INI files' low-level reading: a file, a value, a bounded number, each failure a
ConfigurationError naming the file and key (used by utils/config.py and
utils/read_template_task_id_ini.py)."""

import configparser
import math
from configparser import ConfigParser
from pathlib import Path

from utils.Custom_Exceptions import ConfigurationError
from utils.documents import INT64_MAX


def read_ini(path: Path | str) -> ConfigParser:
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


def ini_value(parser: ConfigParser, path: Path, section: str, key: str, required: bool = True) -> str | None:
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


def parse_int_setting(text: str, where: str, minimum: int, maximum: int = INT64_MAX) -> int:
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


def parse_float_setting(text: str, where: str, minimum: float, maximum: float, kind: str = "a number") -> float:
    """A finite number within [minimum, maximum] (nan and inf are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise ConfigurationError(f"{where} must be {kind}, got {text[:40]!r}") from None
    if not (math.isfinite(value) and minimum <= value <= maximum):
        raise ConfigurationError(f"{where} must be between {minimum:g} and {maximum:g}, got {text[:40]}")
    return value
