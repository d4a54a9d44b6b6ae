"""Optional e-mail alerts (settings: utils.config.AlertSettings, from alerts.ini and the environment)."""

import smtplib
import socket
import ssl
from email.message import EmailMessage

from utils.config import AlertSettings
from utils.one_line import one_line

SMTP_TIMEOUT_SECONDS = 15


def send_alert(settings: AlertSettings, subject: str, body: str) -> None:
    """Send one plain-text e-mail; OSError or smtplib.SMTPException when the server refuses or is away. The
    subject is put on one line (a line break in a header is refused, or would start another header)."""
    message = EmailMessage()
    message["Subject"] = one_line(f"[DRS Amend] {subject}")
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
