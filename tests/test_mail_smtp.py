"""Mail delivered by SMTP (``[mail] url``), against a real SMTP server on loopback.

The server is aiosmtpd: plain, STARTTLS with login, or TLS from the start,
with a certificate from a throwaway authority.  Mail is written to the
outbox in the request and sent by the ``core.deliver_mail`` job.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import smtplib
import socket
import ssl
import time
from collections.abc import Iterator
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from aiosmtpd.smtp import LoginPassword
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from dramatiq.middleware import CurrentMessage
from flask import Flask
from sqlalchemy import select

from core import create_app
from core import smtp
from core.cli import cli
from core.config import ConfigError
from core.db import get_db
from core.models import AuditLog
from core.models import Job
from core.models import OutboxMail
from core.tasks import builtin
from core.tasks import get_jobs
from tests.auth_helpers import PASSWORD
from tests.auth_helpers import Api
from tests.auth_helpers import outbox
from tests.conftest import Users
from tests.conftest import base_config
from tests.conftest import reset_schema

EMAIL = "ada@example.org"
LOGIN = ("trivium", "s3cret pass/:@")
LOGIN_IN_URL = "trivium:s3cret%20pass%2F%3A%40"


# ---------------------------------------------------------------- the server


class Inbox:
    """An aiosmtpd handler that keeps what it accepts and refuses some domains."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], Message]] = []
        self.logins: list[str] = []

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address.endswith("@refused.example"):
            return "550 5.1.1 no such mailbox"
        if address.endswith("@later.example"):
            return "451 4.3.0 try again later"
        if address.endswith("@elsewhere.example"):
            return "550 5.7.1 Relaying denied"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if b"Subject: Spam" in envelope.content:
            return "554 5.6.0 message refused"
        self.messages.append(
            (envelope.mail_from, list(envelope.rcpt_tos), message_from_bytes(envelope.content))
        )
        return "250 Message accepted"

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and (
                data.login.decode(),
                data.password.decode(),
            )
            == LOGIN
        )
        if ok:
            self.logins.append(data.login.decode())
        return AuthResult(success=ok, handled=False)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def authority(folder: Path) -> tuple[Path, ssl.SSLContext]:
    """A throwaway certificate authority's PEM, and a server context it signed for 127.0.0.1."""
    now = dt.datetime.now(dt.UTC)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("Test mail CA"))
        .issuer_name(name("Test mail CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = folder / "mail-ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file, key_file = folder / "mail-cert.pem", folder / "mail-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return ca_file, context


class MailServer:
    """A running SMTP server on 127.0.0.1 and the URL to reach it."""

    def __init__(self, mode: str, folder: Path) -> None:
        self.inbox = Inbox()
        self.port = free_port()
        self.ca_file, context = authority(folder)
        options: dict[str, Any] = {}
        if mode == "starttls":
            options = {
                "tls_context": context,
                "require_starttls": True,
                "authenticator": self.inbox.authenticate,
                "auth_required": True,
            }
            self.url = f"smtp+starttls://{LOGIN_IN_URL}@127.0.0.1:{self.port}"
        elif mode == "tls":
            options = {"ssl_context": context}
            self.url = f"smtps://127.0.0.1:{self.port}"
        else:
            self.url = f"smtp://127.0.0.1:{self.port}"
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port, **options)
        if mode == "tls":
            # the controller's own readiness probe connects by TLS without
            # verifying; it only needs to reach the port
            self.controller.ssl_context = context
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()


@pytest.fixture
def starttls_server(tmp_path: Path) -> Iterator[MailServer]:
    server = MailServer("starttls", tmp_path)
    yield server
    server.stop()


@pytest.fixture
def plain_server(tmp_path: Path) -> Iterator[MailServer]:
    server = MailServer("plain", tmp_path)
    yield server
    server.stop()


# ---------------------------------------------------------------- helpers


def mail_app(config: dict[str, Any], **mail: Any) -> Flask:
    # a base URL whose host mail servers accept in the default From address
    instance = {**config["instance"], "base_url": "http://lms.test.example"}
    app = create_app(config["path"], {**config, "instance": instance, "mail": mail})
    reset_schema(app)
    return app


def deliver_jobs(app: Flask) -> list[Job]:
    """Run the worker until every ``core.deliver_mail`` job has run at least once.

    A job retried later counts once it has failed an attempt (``attempts``
    > 0 and back to ``queued``): the test does not wait for the backoff.
    """
    jobs = get_jobs(app)
    jobs.start_worker()
    rows: list[Job] = []
    try:
        for _ in range(400):  # bounded: 20 s at most
            with get_db(app).session() as sess:
                rows = list(
                    sess.scalars(
                        select(Job).where(Job.actor == "core.deliver_mail").order_by(Job.id)
                    )
                )
                sess.expunge_all()
            if rows and all(
                j.state in ("done", "failed")
                or (j.state == "queued" and j.attempts > 0 and j.error)
                for j in rows
            ):
                return rows
            time.sleep(0.05)
        raise AssertionError(f"delivery jobs never ran: {[(j.state, j.error) for j in rows]}")
    finally:
        jobs.stop_worker()


def audit_entries(app: Flask) -> list[AuditLog]:
    with get_db(app).session() as sess:
        rows = list(sess.scalars(select(AuditLog).order_by(AuditLog.id)))
        sess.expunge_all()
    return rows


def delivery_jobs(app: Flask) -> list[Job]:
    with get_db(app).session() as sess:
        rows = list(sess.scalars(select(Job).where(Job.actor == "core.deliver_mail")))
        sess.expunge_all()
    return rows


def request_reset(app: Flask, users: Users, email: str = EMAIL) -> None:
    users.create(email, password=PASSWORD)
    resp = Api(app.test_client()).post("/auth/password-reset", {"email": email})
    assert resp.status_code == 202


@pytest.fixture
def starttls_app(
    config: dict[str, Any], starttls_server: MailServer
) -> Iterator[tuple[Flask, MailServer]]:
    app = mail_app(config, url=starttls_server.url, ca_file=str(starttls_server.ca_file))
    yield app, starttls_server
    get_db(app).dispose()


# ---------------------------------------------------------------- delivery


def test_a_reset_mail_is_sent_by_a_job_after_the_request(
    starttls_app: tuple[Flask, MailServer],
) -> None:
    app, server = starttls_app
    users = Users(app)

    request_reset(app, users)

    # the request wrote the outbox row and queued its delivery, nothing more
    assert server.inbox.messages == []
    [mail] = outbox(app)
    assert mail.sent_at is None and mail.state == "queued" and mail.attempts == 0
    [job] = delivery_jobs(app)
    assert job.state == "queued"

    [job] = deliver_jobs(app)

    assert job.state == "done", job.error
    [(mail_from, rcpt, message)] = server.inbox.messages
    assert mail_from == "noreply@lms.test.example" and rcpt == [EMAIL]
    assert message["From"] == "Test U <noreply@lms.test.example>"
    assert message["To"] == EMAIL
    assert message["Subject"] == "Reset your Test U password"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Message-ID"].endswith("@lms.test.example>")
    assert "token=" in message.get_payload(decode=True).decode()
    assert server.inbox.logins == ["trivium"]
    [mail] = outbox(app)
    assert mail.sent_at is not None
    assert (mail.state, mail.attempts, mail.last_error) == ("sent", 1, "")
    assert mail.last_attempt_at == mail.sent_at


def test_the_sender_comes_from_the_settings(
    config: dict[str, Any], plain_server: MailServer
) -> None:
    app = mail_app(config, url=plain_server.url, sender="Learning <lms@uni.example>")
    try:
        request_reset(app, Users(app))
        [job] = deliver_jobs(app)
    finally:
        get_db(app).dispose()
    assert job.state == "done", job.error
    [(mail_from, _, message)] = plain_server.inbox.messages
    assert mail_from == "lms@uni.example"
    assert message["From"] == "Learning <lms@uni.example>"
    assert message["Message-ID"].endswith("@uni.example>")


def test_a_server_whose_certificate_is_not_trusted_gets_nothing(
    config: dict[str, Any], starttls_server: MailServer
) -> None:
    app = mail_app(config, url=starttls_server.url)  # no ca_file: the system's authorities
    try:
        request_reset(app, Users(app))
        [job] = deliver_jobs(app)
        [mail] = outbox(app)
    finally:
        get_db(app).dispose()
    assert job.state == "queued" and job.attempts == 1  # tried again later
    assert "CERTIFICATE_VERIFY_FAILED" in job.error
    assert starttls_server.inbox.messages == [] and starttls_server.inbox.logins == []
    assert mail.sent_at is None
    assert mail.state == "queued" and mail.attempts == 1  # the row says why it waits
    assert "CERTIFICATE_VERIFY_FAILED" in mail.last_error


def test_a_permanent_refusal_fails_the_job_at_once(
    config: dict[str, Any], plain_server: MailServer
) -> None:
    app = mail_app(config, url=plain_server.url)
    try:
        request_reset(app, Users(app), "ada@refused.example")
        [job] = deliver_jobs(app)
        [mail] = outbox(app)
    finally:
        get_db(app).dispose()
    assert job.state == "failed" and job.attempts == 1
    assert "550" in job.error and "MailRefused" in job.error
    assert plain_server.inbox.messages == []
    assert mail.sent_at is None
    assert mail.state == "failed" and mail.attempts == 1 and "550" in mail.last_error


def test_a_temporary_refusal_is_tried_again(
    config: dict[str, Any], plain_server: MailServer
) -> None:
    app = mail_app(config, url=plain_server.url)
    try:
        request_reset(app, Users(app), "ada@later.example")
        [job] = deliver_jobs(app)
        [mail] = outbox(app)
    finally:
        get_db(app).dispose()
    assert job.state == "queued" and job.attempts == 1
    assert "451" in job.error
    assert plain_server.inbox.messages == []
    assert mail.state == "queued" and mail.attempts == 1 and "451" in mail.last_error


def test_a_mail_out_of_tries_is_failed(
    config: dict[str, Any], plain_server: MailServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the job's last try: dramatiq's retry count has reached the actor's limit
    app = mail_app(config, url=plain_server.url)
    seen: list[tuple[int, Any]] = []
    last_try = builtin._last_try

    def spy(limit: int | None) -> bool:
        message = CurrentMessage.get_current_message()
        assert message is not None
        seen.append((message.options.get("retries", 0), limit))
        message.options["retries"] = 8  # as after eight failed tries
        return last_try(limit)

    monkeypatch.setattr(builtin, "_last_try", spy)
    try:
        request_reset(app, Users(app), "ada@later.example")
        [job] = deliver_jobs(app)
        [mail] = outbox(app)
    finally:
        get_db(app).dispose()
    assert seen == [(0, 8)]
    assert job.state == "failed"
    assert mail.state == "failed" and "451" in mail.last_error


def test_an_unreachable_server_does_not_touch_the_request(config: dict[str, Any]) -> None:
    app = mail_app(config, url=f"smtp://127.0.0.1:{free_port()}")  # nobody listens
    try:
        users = Users(app)
        request_reset(app, users)  # 202 all the same
        [mail] = outbox(app)
        [job] = deliver_jobs(app)
        [still] = outbox(app)
    finally:
        get_db(app).dispose()
    assert mail.to == EMAIL and still.sent_at is None
    assert job.state == "queued" and job.attempts == 1
    assert "Connection refused" in job.error or "ConnectionRefusedError" in job.error


def write_mail(app: Flask, to: str = EMAIL, **fields: Any) -> int:
    with get_db(app).session() as sess:
        mail = OutboxMail(to=to, subject="Hello", body="Hi", state="queued", **fields)
        sess.add(mail)
        sess.flush()
        return mail.id


def stored(app: Flask, mail_id: int) -> OutboxMail:
    with get_db(app).session() as sess:
        mail = sess.get_one(OutboxMail, mail_id)
        sess.expunge(mail)
    return mail


def test_a_mail_refused_before_it_is_sent_is_failed(
    config: dict[str, Any], plain_server: MailServer
) -> None:
    app = mail_app(config, url=plain_server.url)
    try:
        mail_id = write_mail(app, to="ada@uni.example, eve@uni.example")
        with app.app_context(), pytest.raises(smtp.MailRefused):
            builtin.deliver_mail(mail_id)
        mail = stored(app, mail_id)
    finally:
        get_db(app).dispose()
    assert (mail.state, mail.attempts, mail.sending_until) == ("failed", 1, None)
    assert "one address" in mail.last_error
    assert plain_server.inbox.messages == []


def test_a_try_cut_short_by_the_time_limit_is_recorded(
    config: dict[str, Any], plain_server: MailServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dramatiq.middleware.time_limit import TimeLimitExceeded

    def too_slow(*args: Any) -> Any:
        raise TimeLimitExceeded()

    app = mail_app(config, url=plain_server.url)
    monkeypatch.setattr(smtp, "send_with", too_slow)
    try:
        mail_id = write_mail(app)
        with app.app_context(), pytest.raises(TimeLimitExceeded):
            builtin.deliver_mail(mail_id)  # called directly: the last try
        mail = stored(app, mail_id)
    finally:
        get_db(app).dispose()
    assert (mail.state, mail.attempts, mail.sending_until) == ("failed", 1, None)
    assert mail.last_error == "TimeLimitExceeded"


def test_a_mail_another_job_is_sending_is_not_sent_twice(
    config: dict[str, Any], plain_server: MailServer
) -> None:
    app = mail_app(config, url=plain_server.url)
    try:
        later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
        mail_id = write_mail(app, sending_until=later)
        with app.app_context(), pytest.raises(builtin.MailBeingSent):
            builtin.deliver_mail(mail_id)
        held = stored(app, mail_id)
        assert plain_server.inbox.messages == []
        assert (held.state, held.attempts, held.sent_at) == ("queued", 0, None)

        # the lease ran out (its job died): the next job sends it
        with get_db(app).session() as sess:
            sess.get_one(OutboxMail, mail_id).sending_until = dt.datetime.now(
                dt.UTC
            ) - dt.timedelta(seconds=1)
        with app.app_context():
            builtin.deliver_mail(mail_id)
            builtin.deliver_mail(mail_id)  # sent: nothing more to do
        sent = stored(app, mail_id)
    finally:
        get_db(app).dispose()
    assert (sent.state, sent.attempts, sent.sending_until) == ("sent", 1, None)
    assert len(plain_server.inbox.messages) == 1


def test_without_a_url_mail_stays_in_the_outbox(app: Flask, users: Users) -> None:
    request_reset(app, users)

    assert [(m.to, m.state) for m in outbox(app)] == [(EMAIL, "outbox")]
    assert delivery_jobs(app) == []


def test_a_mail_sent_already_is_not_sent_twice(
    config: dict[str, Any], plain_server: MailServer
) -> None:
    app = mail_app(config, url=plain_server.url)
    try:
        request_reset(app, Users(app))
        deliver_jobs(app)
        [mail] = outbox(app)
        with app.app_context():
            get_jobs(app).enqueue("core.deliver_mail", (mail.id,))  # delivered once more
        jobs = deliver_jobs(app)
    finally:
        get_db(app).dispose()
    assert [j.state for j in jobs] == ["done", "done"]
    assert len(plain_server.inbox.messages) == 1


# ---------------------------------------------------------------- the pieces


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://mail.example", "the scheme must be one of"),
        ("smtp+starttls://", "no host"),
        ("smtps://mail.example:notaport", "mail url"),
        ("smtp://mail.example/inbox", "give only the scheme"),
        ("smtp://user:hunter2@mail.example", "would send the password unencrypted"),
    ],
)
def test_an_unusable_url_stops_start_up_without_quoting_it(
    tmp_path: Path, url: str, message: str
) -> None:
    config = base_config(tmp_path)
    with pytest.raises(ConfigError) as caught:
        create_app(config["path"], {**config, "mail": {"url": url}})
    assert message in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_a_url_names_its_server() -> None:
    server = smtp.parse_url(f"smtp+starttls://{LOGIN_IN_URL}@Mail.Example")
    assert (server.host, server.port, server.username, server.password) == (
        "mail.example",
        587,
        *LOGIN,
    )
    assert "s3cret" not in repr(server) and "s3cret" not in server.describe()
    assert smtp.parse_url("smtps://mail.example").port == 465
    assert smtp.parse_url("smtp://user:pw@localhost:2525").port == 2525  # loopback: allowed


@pytest.mark.parametrize(
    ("to", "subject"),
    [("ada@example.org\r\nBcc: eve@example.org", "Hi"), ("ada@example.org", "Hi\nBcc: eve@x")],
)
def test_a_header_cannot_be_injected(to: str, subject: str) -> None:
    with pytest.raises(smtp.MailRefused):
        smtp.build_message("noreply@uni.example", to, subject, "body")


def test_a_mail_goes_to_exactly_one_address() -> None:
    with pytest.raises(smtp.MailRefused, match="exactly one address"):
        smtp.build_message("lms@uni.example", "ada@x.example, eve@y.example", "Hi", "body")
    with pytest.raises(smtp.MailRefused):
        smtp.build_message("lms@uni.example", "not an address", "Hi", "body")


def send_to(server: MailServer, to: str, subject: str = "Hello") -> None:
    message = smtp.build_message("lms@uni.example", to, subject, "body")
    smtp.send(smtp.parse_url(server.url), message, timeout=5)


def test_only_refusals_of_this_mail_are_for_good(plain_server: MailServer) -> None:
    with pytest.raises(smtp.MailRefused, match="550"):
        send_to(plain_server, "ada@refused.example")
    with pytest.raises(smtp.MailRefused, match="554"):
        send_to(plain_server, "ada@uni.example", subject="Spam")
    # relaying denied is the settings' fault: tried again, not failed for good
    with pytest.raises(smtplib.SMTPRecipientsRefused) as caught:
        send_to(plain_server, "ada@elsewhere.example")
    assert not isinstance(caught.value, smtp.MailRefused)
    assert plain_server.inbox.messages == []


def test_a_server_without_starttls_gets_nothing_in_the_clear(plain_server: MailServer) -> None:
    server = smtp.SmtpServer("smtp+starttls", "127.0.0.1", plain_server.port, "u", "pw")
    message = smtp.build_message("lms@uni.example", "ada@uni.example", "Hi", "body")
    with pytest.raises(smtplib.SMTPNotSupportedError):
        smtp.send(server, message, timeout=5)  # retried by the job, never sent in plain text
    assert plain_server.inbox.messages == []


@pytest.mark.parametrize("password", ["leaky/rest", "leaky#rest", "leaky?rest"])
def test_a_reserved_character_in_the_password_is_not_quoted(tmp_path: Path, password: str) -> None:
    config = base_config(tmp_path)
    url = f"smtps://user:{password}@smtp.example.org:465"
    with pytest.raises(ConfigError) as caught:
        create_app(config["path"], {**config, "mail": {"url": url, "sender": "a@b.example"}})
    assert "leaky" not in str(caught.value) and "percent-encode" in str(caught.value)


@pytest.mark.parametrize(
    ("mail", "base_url", "message"),
    [
        ({}, "http://127.0.0.1:8000", "is not a domain name"),
        ({}, "http://localhost:8000", "is not a domain name"),
        ({"sender": "two@a.example, addresses@b.example"}, "https://lms.example", "one address"),
        ({"sender": "nobody"}, "https://lms.example", "one address"),
        ({"ca_file": "missing-ca.pem"}, "https://lms.example", "no such file"),
    ],
)
def test_mail_settings_are_checked_at_start_up(
    tmp_path: Path, mail: dict[str, str], base_url: str, message: str
) -> None:
    config = base_config(tmp_path)
    settings = {
        **config,
        "instance": {**config["instance"], "base_url": base_url},
        "mail": {"url": "smtp://127.0.0.1:25", **mail},
    }
    with pytest.raises(ConfigError, match=message):
        create_app(config["path"], settings)


def test_a_relative_ca_file_is_found_in_the_instance_folder(tmp_path: Path) -> None:
    config = base_config(tmp_path)
    (tmp_path / "ca.pem").write_text("")
    mail = {"url": "smtps://mx.example", "sender": "lms@uni.example", "ca_file": "ca.pem"}
    app = create_app(config["path"], {**config, "mail": mail})
    try:
        assert app.extensions["trivium.settings"].mail.ca_file == str(tmp_path / "ca.pem")
    finally:
        get_db(app).dispose()


# ---------------------------------------------------------------- the CLI


def cli_run(path: Path, *args: str) -> Any:
    env = {"TRIVIUM_INSTANCE_PATH": None, "TRIVIUM_ACCOUNTS_HASH_PROFILE": "cheapest"}
    return CliRunner(env=env).invoke(cli, ["--instance", str(path), *args])


@pytest.fixture
def instance(tmp_path: Path) -> Path:
    path = tmp_path / "uni"
    made = cli_run(
        path, "init", str(path), "--name", "Uni U", "--base-url", "https://lms.uni.example"
    )
    assert made.exit_code == 0
    assert cli_run(path, "db", "upgrade").exit_code == 0
    return path


def set_mail(path: Path, lines: str) -> None:
    with (path / "instance.toml").open("a") as fh:
        fh.write(f"\n[mail]\n{lines}\n")


def test_mail_test_sends_through_tls(instance: Path, tmp_path: Path) -> None:
    server = MailServer("tls", tmp_path)
    try:
        set_mail(instance, f'url = "{server.url}"\nca_file = "{server.ca_file}"')
        result = cli_run(instance, "mail", "test", "ops@uni.example")
    finally:
        server.stop()
    assert result.exit_code == 0, result.output
    assert f"through 127.0.0.1:{server.port} (smtps)" in result.output
    [(_, rcpt, message)] = server.inbox.messages
    assert rcpt == ["ops@uni.example"] and message["Subject"] == "Test mail from Uni U"


def test_mail_test_says_what_the_server_refused(instance: Path, plain_server: MailServer) -> None:
    set_mail(instance, f'url = "{plain_server.url}"')
    result = cli_run(instance, "mail", "test", "ops@refused.example")
    assert result.exit_code == 1
    assert "not sent through" in result.output and "550" in result.output


def test_mail_test_needs_a_url(instance: Path) -> None:
    result = cli_run(instance, "mail", "test", "ops@uni.example")
    assert result.exit_code == 1 and "[mail] url is empty" in result.output


def test_the_outbox_lists_and_shows_mail(instance: Path) -> None:
    assert cli_run(instance, "mail", "outbox").output.strip() == "No mail."
    app = create_app(instance)
    try:
        with get_db(app).session() as sess:
            sess.add(OutboxMail(to="ada@uni.example", subject="Reset", body="token=abc"))
    finally:
        get_db(app).dispose()

    listed = cli_run(instance, "mail", "outbox", "--unsent")
    failed = cli_run(instance, "mail", "outbox", "--state", "failed")
    shown = cli_run(instance, "mail", "show", "1")
    missing = cli_run(instance, "mail", "show", "2")

    assert "ada@uni.example" in listed.output and "Reset" in listed.output
    assert " outbox " in listed.output
    assert failed.output.strip() == "No mail."
    assert "token=abc" in shown.output and "Sent: not sent" in shown.output
    assert "State: outbox" in shown.output
    assert missing.exit_code == 1 and "no mail 2" in missing.output


def add_mail(path: Path, **fields: Any) -> None:
    app = create_app(path)
    try:
        with get_db(app).session() as sess:
            sess.add(OutboxMail(to="ada@uni.example", subject="Reset", body="token=abc", **fields))
    finally:
        get_db(app).dispose()


def stored_mail(path: Path) -> list[tuple[str, int, str]]:
    app = create_app(path)
    try:
        return [(m.state, m.attempts, m.last_error) for m in outbox(app)]
    finally:
        get_db(app).dispose()


def test_a_failed_mail_is_queued_again_and_sent(instance: Path, plain_server: MailServer) -> None:
    add_mail(instance, state="failed", attempts=9, last_error="451 try later")
    set_mail(instance, f'url = "{plain_server.url}"')

    shown = cli_run(instance, "mail", "show", "1")
    assert "State: failed" in shown.output and "Last error: 451 try later" in shown.output
    assert "Tries: 9" in shown.output

    result = cli_run(instance, "mail", "retry", "1")

    assert result.exit_code == 0, result.output
    assert "Mail 1 to ada@uni.example queued for delivery again." in result.output
    assert stored_mail(instance) == [("queued", 0, "451 try later")]
    app = create_app(instance)
    try:
        [job] = deliver_jobs(app)
        [entry] = [e for e in audit_entries(app) if e.action == "mail.retry"]
    finally:
        get_db(app).dispose()
    assert job.state == "done", job.error
    assert stored_mail(instance) == [("sent", 1, "")]
    assert [rcpt for _, rcpt, _ in plain_server.inbox.messages] == [["ada@uni.example"]]
    assert entry.actor_id is None and entry.detail == {"to": "ada@uni.example", "via": "cli"}


@pytest.mark.parametrize(
    ("fields", "mail_url", "message"),
    [
        ({"state": "sent", "attempts": 1}, True, "is sent: only kept or failed mail"),
        ({"state": "queued"}, True, "is queued: only kept or failed mail"),
        ({"state": "failed", "attempts": 9}, False, "[mail] url is empty"),
    ],
)
def test_retry_refuses_mail_it_cannot_queue_and_changes_nothing(
    instance: Path, fields: dict[str, Any], mail_url: bool, message: str
) -> None:
    add_mail(instance, **fields)
    if mail_url:
        set_mail(instance, 'url = "smtp://127.0.0.1:25"')
    before = stored_mail(instance)

    result = cli_run(instance, "mail", "retry", "1")
    missing = cli_run(instance, "mail", "retry", "2")

    assert result.exit_code == 1 and message in result.output
    assert missing.exit_code == 1 and "no mail 2" in missing.output
    assert stored_mail(instance) == before
    app = create_app(instance)
    try:
        assert delivery_jobs(app) == []
        assert [e for e in audit_entries(app) if e.action == "mail.retry"] == []
    finally:
        get_db(app).dispose()


def test_the_settings_page_masks_the_mail_password(tmp_path: Path) -> None:
    from core.operator import masked_settings

    config = base_config(tmp_path)
    mail = {"url": f"smtps://{LOGIN_IN_URL}@mx", "sender": "lms@uni.example"}
    app = create_app(config["path"], {**config, "mail": mail})
    try:
        shown = masked_settings(app.extensions["trivium.settings"])["mail"]["url"]
    finally:
        get_db(app).dispose()
    assert shown.startswith("smtps://trivium:") and shown.endswith("@mx")
    assert "s3cret" not in shown


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("smtps://apikey:SG.abc@mx", "smtps://apikey:••••••@mx"),
        ("smtps://lms%40uni.example:pw@mx", "smtps://lms%40uni.example:••••••@mx"),
        ("smtps://0f3c9a7e-5b1d-4c2e-9d8f-1a2b3c4d5e6f:same@mx", "smtps://••••••:••••••@mx"),
        ("smtps://tok3n:tok3n@mx", "smtps://••••••:••••••@mx"),
        ("smtp://127.0.0.1:25", "smtp://127.0.0.1:25"),
        ("smtp://0f3c9a7e5b1d4c2e9d8f1a2b3c4d5e6f@127.0.0.1", "smtp://••••••@127.0.0.1"),
        ("smtp://relay@127.0.0.1:25", "smtp://relay@127.0.0.1:25"),
    ],
)
def test_a_token_as_the_user_name_is_masked_too(tmp_path: Path, url: str, shown: str) -> None:
    from core.operator import masked_settings

    config = base_config(tmp_path)
    app = create_app(config["path"], {**config, "mail": {"url": url, "sender": "l@uni.example"}})
    try:
        masked = masked_settings(app.extensions["trivium.settings"])["mail"]["url"]
    finally:
        get_db(app).dispose()
    assert masked == shown


def test_secret_query_values_in_any_url_are_masked() -> None:
    from core.operator import masked_settings

    class Dumped:
        def model_dump(self, mode: str) -> dict[str, Any]:
            url = "https://hooks.example/x?api_key=abc&x=1&token=t&password=p"
            return {"plugins": {"notify": {"url": url}}}

    masked = masked_settings(Dumped())  # type: ignore[arg-type]

    assert masked["plugins"]["notify"]["url"] == (
        "https://hooks.example/x?api_key=••••••&x=1&token=••••••&password=••••••"
    )


def test_purge_deletes_old_mail_and_keeps_unsent_mail_a_day_longer(instance: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    ages = {"fresh": 1, "old-sent": 40, "old-unsent": 30.5, "older-unsent": 32}
    app = create_app(instance)
    try:
        with get_db(app).session() as sess:
            for subject, days in ages.items():
                sess.add(
                    OutboxMail(
                        to="ada@uni.example",
                        subject=subject,
                        body="token=abc",
                        created_at=now - dt.timedelta(days=days),
                        sent_at=now if subject == "old-sent" else None,
                    )
                )
    finally:
        get_db(app).dispose()
    set_mail(instance, 'url = "smtp://127.0.0.1:25"')

    result = cli_run(instance, "mail", "purge", "--days", "30")

    assert result.exit_code == 0 and "Deleted 2 outbox mail" in result.output
    listed = cli_run(instance, "mail", "outbox").output
    assert "fresh" in listed and "old-unsent" in listed
    assert "old-sent" not in listed and "older-unsent" not in listed
