"""The INI files' low-level reading: a file checked against its schema, a value, a bounded number, each
failure a ConfigurationError naming the file and key (used by utils/config.py and
utils/read_template_task_id_ini.py)."""

import configparser
import difflib
import math
from collections.abc import Iterable, Mapping
from configparser import ConfigParser
from dataclasses import dataclass
from pathlib import Path

from utils.Custom_Exceptions import ConfigurationError
from utils.documents import INT64_MAX

# The sections one INI file may hold, each with the keys it may hold, spelt as the project spells them.
IniSchema = Mapping[str, tuple[str, ...]]

# configparser's DEFAULT section hands its keys to every section. No section header can name this one, so a
# [DEFAULT] of a file is a section like any other, refused as unknown.
_NO_DEFAULT_SECTION = "\n"


@dataclass(frozen=True)
class IniFile:
    """One INI file, parsed and checked against its schema."""
    path: Path
    parser: ConfigParser

    def value(self, section: str, key: str, required: bool = True) -> str | None:
        """One stripped value; a missing or empty required one is a ConfigurationError."""
        value = self.parser.get(section, key, fallback="").strip()
        if not value and required:
            raise ConfigurationError(f"configuration file {self.path}: [{section}] {key} is missing or empty")
        return value or None

    def where(self, section: str, key: str) -> str:
        """How a message names the key."""
        return f"{self.path}: [{section}] {key}"


def read_ini(path: Path | str, schema: IniSchema, required_sections: Iterable[str] = ()) -> IniFile:
    """Parse one INI file (UTF-8, with or without a byte-order mark). A missing or unparsable file, a
    missing required section, and a section or key its schema does not hold are each a ConfigurationError
    naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigurationError(f"configuration file {path} is missing")
    parser = configparser.ConfigParser(interpolation=None, default_section=_NO_DEFAULT_SECTION)
    try:
        with path.open(encoding="utf-8-sig") as handle:
            parser.read_file(handle)
    except (OSError, UnicodeDecodeError, configparser.Error) as exc:
        reason = str(exc).splitlines()[0]
        raise ConfigurationError(f"configuration file {path} cannot be read: {reason}") from exc
    for section in required_sections:
        if not parser.has_section(section):
            raise ConfigurationError(f"configuration file {path} has no [{section}] section")
    _refuse_unknown_names(parser, path, schema)
    return IniFile(path, parser)


def _closest(name: str, valid: Iterable[str]) -> str | None:
    """The valid name nearest to `name`, compared without case, as the project spells it; None when none
    is close."""
    by_lower = {candidate.lower(): candidate for candidate in valid}
    matches = difflib.get_close_matches(name.lower(), list(by_lower), n=1)
    return by_lower[matches[0]] if matches else None


def _refuse_unknown_names(parser: ConfigParser, path: Path, schema: IniSchema) -> None:
    """Every section of the file is one of `schema`'s, spelt alike, and every key one its section holds
    (configparser has lowercased the keys: they are compared without case)."""
    for section in parser.sections():
        if section not in schema:
            closest = _closest(section, schema)
            hint = (f"did you mean [{closest}]?" if closest
                    else "valid sections: " + ", ".join(f"[{name}]" for name in schema))
            raise ConfigurationError(f"{path}: unknown section [{section}]; {hint}")
        known_keys = {key.lower() for key in schema[section]}
        for key in parser.options(section):
            if key not in known_keys:
                raise ConfigurationError(f"{path}: unknown key {key.upper()} in [{section}]; "
                                         f"{_key_hint(key, section, schema)}")


def _key_hint(key: str, section: str, schema: IniSchema) -> str:
    """What an unknown key of `section` may have been meant as: a key of another section, a close one of
    its own, or else the keys it holds."""
    for other, keys in schema.items():
        for valid in keys:
            if valid.lower() == key:
                return f"it belongs in [{other}]"
    closest = _closest(key, schema[section])
    return f"did you mean {closest}?" if closest else "valid keys: " + ", ".join(schema[section])


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
