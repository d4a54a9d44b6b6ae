"""Optional e-mail alerts: settings from config/alerts.ini, credentials from the environment."""

import os
import smtplib
import socket
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from utils.config import DEFAULT_CONFIG_DIR, ini_value, parse_int_setting, read_ini
from utils.Custom_Exceptions import ConfigurationError
from utils.secrets import register_secret

ALERTS_CONFIG_FILE = "alerts.ini"
SMTP_TIMEOUT_SECONDS = 15


@dataclass(frozen=True)
class AlertSettings:
    host: str
    port: int
    sender: str
    recipients: tuple
    starttls: bool
    username: str = None
    password: str = None
    ca_file: str = None

    def __repr__(self):
        return f"AlertSettings(host={self.host!r}, port={self.port}, recipients={self.recipients!r})"


def _flag(text, where):
    value = (text or "no").strip().lower()
    if value not in ("yes", "no", "true", "false", "1", "0", "on", "off"):
        raise ConfigurationError(f"{where} must be yes or no, got {text!r}")
    return value in ("yes", "true", "1", "on")


def load_alert_settings(config_dir=DEFAULT_CONFIG_DIR, environ=None):
    """The [SMTP] section of alerts.ini; None when the file is absent or ENABLED is not yes."""
    environ = os.environ if environ is None else environ
    path = Path(config_dir) / ALERTS_CONFIG_FILE
    if not path.exists():
        return None
    parser = read_ini(path)
    if not _flag(ini_value(parser, path, "SMTP", "ENABLED", required=False), f"{path}: [SMTP] ENABLED"):
        return None
    recipients = tuple(r.strip() for r in ini_value(parser, path, "SMTP", "RECIPIENTS").split(",") if r.strip())
    if not recipients:
        raise ConfigurationError(f"{path}: [SMTP] RECIPIENTS names no address")
    credentials = []
    for key in ("USERNAME_ENV", "PASSWORD_ENV"):
        variable = ini_value(parser, path, "SMTP", key, required=False)
        if variable and not environ.get(variable):
            raise ConfigurationError(
                f"{path}: [SMTP] {key} names the environment variable {variable}, which is not set")
        credentials.append(environ.get(variable) if variable else None)
    if credentials[1]:
        register_secret(credentials[1])
    return AlertSettings(
        host=ini_value(parser, path, "SMTP", "HOST"),
        port=parse_int_setting(ini_value(parser, path, "SMTP", "PORT"), f"{path}: [SMTP] PORT", 1, 65535),
        sender=ini_value(parser, path, "SMTP", "SENDER"),
        recipients=recipients,
        starttls=_flag(ini_value(parser, path, "SMTP", "STARTTLS", required=False), f"{path}: [SMTP] STARTTLS"),
        username=credentials[0], password=credentials[1], ca_file=_ca_file(parser, path))


def _ca_file(parser, path):
    ca_file = ini_value(parser, path, "SMTP", "CA_FILE", required=False)
    if ca_file and not Path(ca_file).is_file():
        raise ConfigurationError(f"{path}: [SMTP] CA_FILE {ca_file} is not a file")
    return ca_file


def send_alert(settings, subject, body):
    """Send one plain-text e-mail; OSError or smtplib.SMTPException when the server refuses or is away."""
    message = EmailMessage()
    message["Subject"] = f"[DRS Amend] {subject}"
    message["From"] = settings.sender
    message["To"] = ", ".join(settings.recipients)
    message["X-DRS-Amend-Host"] = socket.gethostname()
    message.set_content(body)
    with smtplib.SMTP(settings.host, settings.port, timeout=SMTP_TIMEOUT_SECONDS) as smtp:
        if settings.starttls:
            # Verified against the system's CAs (or CA_FILE): smtplib alone would not check the certificate.
            smtp.starttls(context=ssl.create_default_context(cafile=settings.ca_file))
        if settings.username:
            smtp.login(settings.username, settings.password or "")
        smtp.send_message(message)
