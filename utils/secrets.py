"""Secrets that must never be shown: the password of the configured URI, in every spelling."""

import logging
import re
from urllib.parse import unquote

_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^@/]*)@")
_secrets = set()


def redact_uri(uri):
    """The URI with any password replaced by ***, fit for logs and error messages."""
    match = _USERINFO.match(uri)
    if not match:
        return uri
    user = match.group("userinfo").split(":", 1)[0]
    return f"{match.group('scheme')}{user}:***@{uri[match.end():]}"


def register_uri_secrets(uri):
    """Remember the password of `uri` (as written and URL-decoded) so that scrub() hides it."""
    match = _USERINFO.match(uri)
    if match and ":" in match.group("userinfo"):
        password = match.group("userinfo").split(":", 1)[1]
        _secrets.update(secret for secret in (password, unquote(password)) if secret)


def register_secret(secret):
    """Remember one more secret (an SMTP password, say) for scrub()."""
    if secret:
        _secrets.add(secret)


def scrub(text):
    """`text` with every registered secret replaced by ***."""
    text = str(text)
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


class SecretFilter(logging.Filter):
    """Rewrites each record's message so that no handler ever writes a registered secret."""

    def filter(self, record):
        if _secrets:
            record.msg = scrub(record.getMessage())
            record.args = None
            if record.exc_info and not record.exc_text:
                record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
        return True
