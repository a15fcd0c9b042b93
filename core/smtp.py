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
from typing import TYPE_CHECKING
from urllib.parse import unquote
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from core.config import Settings

#: Scheme -> default port.
SCHEMES = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}


class MailUrlInvalid(ValueError):
    """``[mail] url`` cannot be used."""


class MailSenderInvalid(ValueError):
    """``[mail] sender`` (or the default made from the base URL) cannot be used."""


class MailRefused(Exception):
    """The server refused the recipient or the message for good, or it cannot be written.

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
    except ValueError:
        # the parser's message may quote part of the password: say nothing of it
        raise MailUrlInvalid(
            "mail url: the port is not a number, or the user name or password holds "
            "an unencoded reserved character (percent-encode / ? # @ :)"
        ) from None
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
    """A plain-text UTF-8 message to one recipient, marked as sent by a program (RFC 3834).

    :raise MailRefused: ``to`` is not exactly one address, or an address or
        the subject cannot be written as a header (a line break, say): no
        header injection reaches the server.
    """
    message = EmailMessage()
    try:
        message["From"] = sender
        message["To"] = to
        message["Subject"] = subject
        recipients = message["To"].addresses
    except (ValueError, IndexError) as exc:  # the header parser refuses it
        raise MailRefused(f"the mail cannot be written: {exc}") from exc
    if len(recipients) != 1 or not recipients[0].domain:
        raise MailRefused(f"the mail must go to exactly one address, not {to!r}")
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


def _addresses(value: str) -> tuple[Address, ...]:
    message = EmailMessage()
    message["From"] = value
    found: tuple[Address, ...] = message["From"].addresses
    return found


def _first_address(sender: str) -> Address:
    addresses = _addresses(sender)
    if not addresses:
        raise ValueError(sender)
    return addresses[0]


def default_sender(instance_name: str, base_url: str) -> str:
    """``"<instance name>" <noreply@<base URL's host>>``.

    :raise MailSenderInvalid: the host is not a domain name (an IP address,
        ``localhost``): mail servers refuse such a sender.
    """
    host = urlsplit(base_url).hostname or ""
    if "." not in host or _is_ip(host):
        raise MailSenderInvalid(
            f"the base URL's host {host!r} is not a domain name mail servers accept in a "
            "From address: set [mail] sender"
        )
    return str(Address(display_name=instance_name, username="noreply", domain=host))


def sender_of(settings: Settings) -> str:
    """The From address: ``[mail] sender``, else :func:`default_sender`.

    :raise MailSenderInvalid: no sender is set and the base URL gives none.
    """
    mail, instance = settings.mail, settings.instance
    return mail.sender or default_sender(instance.name, instance.base_url)


def check_sender(sender: str) -> None:
    """Refuse a ``[mail] sender`` that is not one address with a domain.

    :raise MailSenderInvalid: it is not.
    """
    try:
        addresses = _addresses(sender)
    except (ValueError, IndexError):
        addresses = ()
    valid = len(addresses) == 1 and bool(addresses[0].domain)
    if not valid:
        raise MailSenderInvalid(f"[mail] sender {sender!r} is not one address like lms@uni.example")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def tls_context(ca_file: str = "") -> ssl.SSLContext:
    """A client context that verifies the server (against ``ca_file`` if given)."""
    return ssl.create_default_context(cafile=ca_file or None)


def send(server: SmtpServer, message: EmailMessage, *, timeout: float, ca_file: str = "") -> None:
    """Deliver ``message`` to ``server`` in one SMTP conversation.

    Only the server's answer to the recipient or the message itself can
    refuse a mail for good, and then only for that mail: a 5xx reply there,
    unless its enhanced status is 5.7 (relaying denied, authentication
    required: the settings' fault, like a refused login, STARTTLS or sender).

    :raise MailRefused: the server refused this mail for good.
    :raise OSError: the server could not be reached, or TLS failed (the
        certificate, say); ``smtplib.SMTPException``: a temporary refusal, a
        refusal the settings can mend, or a broken conversation.  All are
        worth another try later.
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
        recipient = message["To"].addresses[0].addr_spec
        try:
            client.send_message(message, to_addrs=[recipient])
        except smtplib.SMTPRecipientsRefused as exc:
            code, answer = exc.recipients[recipient]
            if _for_good(code, answer):
                raise MailRefused(
                    f"{server.describe()} refused {recipient}: {code} {answer!r}"
                ) from exc
            raise
        except smtplib.SMTPDataError as exc:
            if _for_good(exc.smtp_code, exc.smtp_error):
                raise MailRefused(
                    f"{server.describe()} refused the message: {exc.smtp_code} {exc.smtp_error!r}"
                ) from exc
            raise
    finally:
        try:
            client.quit()
        except (smtplib.SMTPException, OSError):
            client.close()


def send_with(settings: Settings, message: EmailMessage) -> SmtpServer:
    """:func:`send` ``message`` as ``[mail]`` says (URL, timeout, ``ca_file``); return the server.

    :raise MailRefused: as :func:`send`, and its other errors.
    """
    server = parse_url(settings.mail.url)
    send(server, message, timeout=settings.mail.timeout_seconds, ca_file=settings.mail.ca_file)
    return server


def _for_good(code: int, answer: bytes | str) -> bool:
    """A 5xx reply about this mail, not about the settings (enhanced status 5.7.x, 530)."""
    text = answer.decode(errors="replace") if isinstance(answer, bytes) else answer
    return 500 <= code < 600 and code != 530 and not text.lstrip().startswith("5.7.")
