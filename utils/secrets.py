"""Secrets that must never be shown: the password of a URI, and the secrets registered by the scripts.

A URI is split where pymongo splits it (the options at the first "?", the hosts at the
first "/", the user information at the last "@" before them), so what pymongo would take
for the password is what is hidden. A URI whose password holds an unescaped "/" or "?" is
split by pymongo inside the password; it is refused before pymongo sees it
(check_uri_userinfo), and shown with everything up to its last "@" hidden.

Registered secrets are hidden where they stand as a whole (not inside a longer word), so
that a short password never turns "password" into "***assword".
"""

import logging
import re
from urllib.parse import unquote, unquote_plus

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# A URI inside a longer text: a scheme, then everything up to a space or a quote.
_URI_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]+")
# URI options whose values are secrets (names compared in lower case, as pymongo does).
SECRET_OPTIONS = ("tlscertificatekeyfilepassword", "authmechanismproperties")
_ESCAPED = re.compile(r"%[0-9A-Fa-f]{2}")
_secrets: set[str] = set()


def split_uri(uri: str) -> tuple[str | None, str | None, str]:
    """(scheme, user information or None, the rest after it) of a URI, split as pymongo splits it.

    When pymongo would find no user information but an "@" follows later (a password holding
    an unescaped "/" or "?"), everything before the last "@" is taken as user information.
    """
    match = _SCHEME.match(uri)
    if not match:
        return None, None, uri
    scheme, rest = match.group(), uri[match.end():]
    host_part = rest.partition("?")[0].partition("/")[0]
    if "@" in host_part:
        userinfo = host_part.rpartition("@")[0]
    elif "@" in rest:
        userinfo = rest.rpartition("@")[0]
    else:
        return scheme, None, rest
    return scheme, userinfo, rest[len(userinfo) + 1:]


def _redact_options(rest: str) -> str:
    before, mark, query = rest.partition("?")
    if not mark:
        return rest
    options = []
    for option in query.split("&"):
        key, equals, _ = option.partition("=")
        options.append(f"{key}=***" if equals and key.lower() in SECRET_OPTIONS else option)
    return before + "?" + "&".join(options)


def redact_uri(uri: str) -> str:
    """The URI with its password (and secret options) replaced by ***, fit for logs and error messages."""
    scheme, userinfo, rest = split_uri(uri)
    if scheme is None:
        return uri
    rest = _redact_options(rest)
    if userinfo is None:
        return scheme + rest
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}{user}:***@{rest}" if colon else f"{scheme}{userinfo}@{rest}"


def check_uri_userinfo(uri: str) -> str | None:
    """None, or why the user name or password of `uri` would be misread: a character that must be
    percent-encoded, said in words an operator can act on."""
    _, userinfo, _ = split_uri(uri)
    if userinfo is None:
        return None
    user, colon, password = userinfo.partition(":")
    for part, name in ((user, "user name"), (password, "password")):
        for character, code in (("@", "%40"), (":", "%3A"), ("/", "%2F"), ("?", "%3F")):
            if character in part:
                return (f"its {name} contains an unescaped '{character}', which must be written {code} "
                        f"(percent-encode the user name and password, e.g. with urllib.parse.quote_plus)")
        if "%" in _ESCAPED.sub("", part):
            return (f"its {name} contains a '%' that does not start an escape such as %25 (percent-encode the "
                    f"user name and password, e.g. with urllib.parse.quote_plus)")
    return None


def register_uri_secrets(uri: str) -> None:
    """Remember the password and secret options of `uri` (as written and URL-decoded) for scrub()."""
    _, userinfo, rest = split_uri(uri)
    if userinfo is not None and ":" in userinfo:
        password = userinfo.partition(":")[2]
        _secrets.update(secret for secret in (password, unquote(password)) if secret)
    for option in rest.partition("?")[2].split("&"):
        key, _, value = option.partition("=")
        if key.lower() in SECRET_OPTIONS and value:
            _secrets.update((value, unquote_plus(value)))


def register_secret(secret: str | None) -> None:
    """Remember one more secret (an SMTP password, say) for scrub()."""
    if secret:
        _secrets.add(secret)


def _standalone(secret: str) -> re.Pattern[str]:
    return re.compile(r"(?<![A-Za-z0-9])" + re.escape(secret) + r"(?![A-Za-z0-9])")


def scrub(text: object) -> str:
    """`text` with the password of every URI in it, and every registered secret standing as a whole, as ***."""
    text = _URI_IN_TEXT.sub(lambda match: redact_uri(match.group()), str(text))
    for secret in sorted(_secrets, key=len, reverse=True):
        text = _standalone(secret).sub("***", text)
    return text


class SecretFilter(logging.Filter):
    """Rewrites each record's message so that no handler ever writes a secret."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = scrub(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
        return True
