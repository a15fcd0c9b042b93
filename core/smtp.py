"""Mail delivery by SMTP: the ``[mail] url`` setting, the message, the conversation.

The URL names the server and how to reach it:

- ``smtp+starttls://user:password@smtp.example.org:587``: upgraded to TLS
  with STARTTLS (port 587 by default); the usual submission setting.
- ``smtps://user:password@smtp.example.org:465``: TLS from the start (465).
- ``smtp://127.0.0.1:25``: no encryption, for a relay on this machine or a
  trusted network (25).  It refuses a user name and password unless the host
  is a loopback address: they would cross the network readable.

The server's certificate is verified against the system's authorities, or
those in ``[mail] ca_file``.  Percent-encode reserved characters in the user
name and password.  Mail is sent by the ``core.deliver_mail`` job
(:mod:`core.tasks.builtin`), never inside a request.
"""

from __future__ import annotations

import ipaddress
import smtplib
import ssl
from dataclasses import dataclass
from dataclasses import field
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate
from email.utils import make_msgid
from urllib.parse import unquote
from urllib.parse import urlsplit

#: Scheme -> default port.
SCHEMES = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}


class MailUrlInvalid(ValueError):
    """``[mail] url`` cannot be used."""


class MailRefused(Exception):
    """The server refused the mail for good (a 5xx reply) or it cannot be written.

    Retrying does not help: the delivery job fails at once with this error.
    """


@dataclass(frozen=True)
class SmtpServer:
    """Where and how to deliver (parsed from ``[mail] url``)."""

    scheme: str
    host: str
    port: int
    username: str = ""
    password: str = field(default="", repr=False)

    def describe(self) -> str:
        """``host:port (scheme)``, without credentials, for messages and logs."""
        return f"{self.host}:{self.port} ({self.scheme})"


def parse_url(url: str) -> SmtpServer:
    """Read a ``[mail] url``.

    :raise MailUrlInvalid: unknown scheme, no host, a bad port, or a
        password on an unencrypted connection to another machine.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise MailUrlInvalid(f"mail url: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        known = ", ".join(f"{s}://" for s in SCHEMES)
        raise MailUrlInvalid(f"mail url: the scheme must be one of {known}, not {scheme!r}")
    host = parts.hostname or ""
    if not host:
        raise MailUrlInvalid("mail url: no host (smtp+starttls://user:password@host:587)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise MailUrlInvalid("mail url: give only the scheme, credentials, host and port")
    username = unquote(parts.username or "")
    password = unquote(parts.password or "")
    if scheme == "smtp" and (username or password) and not _loopback(host):
        raise MailUrlInvalid(
            f"mail url: smtp:// to {host} would send the password unencrypted; "
            "use smtp+starttls:// or smtps://"
        )
    return SmtpServer(scheme, host, port or SCHEMES[scheme], username, password)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_message(sender: str, to: str, subject: str, body: str) -> EmailMessage:
    """A plain-text UTF-8 message, marked as sent by a program (RFC 3834).

    :raise MailRefused: an address or the subject cannot be written as a
        header (a line break, say): no header injection reaches the server.
    """
    message = EmailMessage()
    try:
        message["From"] = sender
        message["To"] = to
        message["Subject"] = subject
    except (ValueError, IndexError) as exc:  # the header parser refuses it
        raise MailRefused(f"the mail cannot be written: {exc}") from exc
    domain = _domain(sender)
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = make_msgid(domain=domain or None)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(body)
    return message


def _domain(sender: str) -> str:
    try:
        return _first_address(sender).domain
    except (ValueError, IndexError):
        return ""


def _first_address(sender: str) -> Address:
    message = EmailMessage()
    message["From"] = sender
    addresses = message["From"].addresses
    if not addresses:
        raise ValueError(sender)
    first: Address = addresses[0]
    return first


def default_sender(instance_name: str, base_url: str) -> str:
    """``"<instance name>" <noreply@<base URL's host>>``."""
    host = urlsplit(base_url).hostname or "localhost"
    return str(Address(display_name=instance_name, username="noreply", domain=host))


def tls_context(ca_file: str = "") -> ssl.SSLContext:
    """A client context that verifies the server (against ``ca_file`` if given)."""
    return ssl.create_default_context(cafile=ca_file or None)


def send(server: SmtpServer, message: EmailMessage, *, timeout: float, ca_file: str = "") -> None:
    """Deliver ``message`` to ``server`` in one SMTP conversation.

    :raise MailRefused: the server refused it with a permanent (5xx) reply.
    :raise OSError: the server could not be reached, or TLS failed (the
        certificate, say); ``smtplib.SMTPException``: a temporary refusal or
        a broken conversation.  Both are worth another try later.
    """
    client: smtplib.SMTP
    if server.scheme == "smtps":
        client = smtplib.SMTP_SSL(
            server.host, server.port, timeout=timeout, context=tls_context(ca_file)
        )
    else:
        client = smtplib.SMTP(server.host, server.port, timeout=timeout)
    try:
        client.ehlo()
        if server.scheme == "smtp+starttls":
            client.starttls(context=tls_context(ca_file))
            client.ehlo()
        if server.username:
            client.login(server.username, server.password)
        client.send_message(message)
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        if all(code >= 500 for code in codes):
            raise MailRefused(
                f"{server.describe()} refused the recipient: {exc.recipients}"
            ) from exc
        raise
    except smtplib.SMTPResponseException as exc:
        # a refused login or sender is the operator's to mend: tried again later
        settings_problem = (smtplib.SMTPAuthenticationError, smtplib.SMTPSenderRefused)
        if exc.smtp_code >= 500 and not isinstance(exc, settings_problem):
            raise MailRefused(
                f"{server.describe()} refused the mail: {exc.smtp_code} {exc.smtp_error!r}"
            ) from exc
        raise
    finally:
        try:
            client.quit()
        except (smtplib.SMTPException, OSError):
            client.close()
