"""``trivium mail``: the outbox, delivery by SMTP, a test of the settings."""

from __future__ import annotations

import smtplib
from datetime import timedelta

import click
from sqlalchemy import select

from core.auth.mail import STATES
from core.cli.base import cli
from core.cli.base import state_of
from core.cli.base import table
from core.errors import last_line


@cli.group()
def mail() -> None:
    """Mail: the outbox, and a test of the SMTP settings ([mail] url)."""


@mail.command("outbox")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--unsent", is_flag=True, help="Only mail no SMTP server has accepted yet.")
@click.option(
    "--state",
    type=click.Choice(STATES),
    help="Only mail in this delivery state.",
)
@click.pass_context
def mail_outbox(ctx: click.Context, limit: int, unsent: bool, state: str | None) -> None:
    """List the newest mail in the outbox and where its delivery stands.

    States: outbox (kept here only, no SMTP server), queued (a delivery job
    will try it), sent, failed (refused for good or out of tries: `mail
    retry ID`).  Read one with `mail show ID`.
    """
    from core.db import get_db
    from core.models import OutboxMail

    query = select(OutboxMail).order_by(OutboxMail.id.desc()).limit(limit)
    if unsent:
        query = query.where(OutboxMail.sent_at.is_(None))
    if state:
        query = query.where(OutboxMail.state == state)
    with get_db(state_of(ctx).app()).session() as sess:
        rows = [
            (
                str(m.id),
                m.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                m.state,
                str(m.attempts),
                m.to,
                m.subject[:50],
                last_line(m.last_error, 60) if m.state != "sent" else "",
            )
            for m in sess.scalars(query)
        ]
    if not rows:
        click.echo("No mail.")
        return
    table(("id", "written (UTC)", "state", "tries", "to", "subject", "last error"), rows)


@mail.command("show")
@click.argument("mail_id", type=int)
@click.pass_context
def mail_show(ctx: click.Context, mail_id: int) -> None:
    """Print the outbox mail MAIL_ID (it may hold a password-reset link)."""
    from core.db import get_db
    from core.models import OutboxMail

    with get_db(state_of(ctx).app()).session() as sess:
        found = sess.get(OutboxMail, mail_id)
        if found is None:
            raise click.ClickException(f"no mail {mail_id} in the outbox")
        sent = found.sent_at.strftime("%Y-%m-%d %H:%M:%S UTC") if found.sent_at else "not sent"
        lines = [f"To: {found.to}", f"Subject: {found.subject}", f"State: {found.state}"]
        lines.append(f"Sent: {sent}")
        if found.attempts:
            tried = found.last_attempt_at
            when = tried.strftime("%Y-%m-%d %H:%M:%S UTC") if tried else "?"
            lines.append(f"Tries: {found.attempts}, the last at {when}")
        if found.last_error and found.state != "sent":
            lines.append(f"Last error: {found.last_error}")
        click.echo("\n".join(lines) + f"\n\n{found.body}")


@mail.command("retry")
@click.argument("mail_id", type=int)
@click.pass_context
def mail_retry(ctx: click.Context, mail_id: int) -> None:
    """Queue the failed (or kept) outbox mail MAIL_ID for SMTP delivery again."""
    from core.auth.mail import MailDeliveryOff
    from core.auth.mail import MailNotRetryable
    from core.auth.mail import queue_again
    from core.db import get_db
    from core.models import OutboxMail

    app = state_of(ctx).app()
    with app.app_context(), get_db(app).sessions() as sess:
        found = sess.get(OutboxMail, mail_id)
        if found is None:
            raise click.ClickException(f"no mail {mail_id} in the outbox")
        to = found.to
        try:
            queue_again(sess, found, None)
        except (MailDeliveryOff, MailNotRetryable) as exc:
            raise click.ClickException(str(exc)) from exc
        sess.commit()
    click.echo(f"Mail {mail_id} to {to} queued for delivery again.")


@mail.command("purge")
@click.option("--days", default=30, show_default=True, type=click.IntRange(0), help="Age.")
@click.pass_context
def mail_purge(ctx: click.Context, days: int) -> None:
    """Delete outbox mail older than --days (its bodies hold reset links and invitation codes).

    With [mail] url set, mail not sent yet is kept a day longer, while its
    delivery may still be tried.
    """
    from sqlalchemy import delete
    from sqlalchemy import or_

    from core.db import get_db
    from core.db import utcnow
    from core.models import OutboxMail

    app = state_of(ctx).app()
    cutoff = utcnow() - timedelta(days=days)
    keep_unsent = bool(app.extensions["trivium.settings"].mail.url)
    query = delete(OutboxMail).where(OutboxMail.created_at < cutoff)
    if keep_unsent:
        # delivery is tried for a couple of hours: a day more leaves it room
        query = query.where(
            or_(
                OutboxMail.sent_at.is_not(None),
                OutboxMail.created_at < cutoff - timedelta(days=1),
            )
        )
    with get_db(app).session() as sess:
        removed = sess.execute(query).rowcount  # type: ignore[attr-defined]
    click.echo(f"Deleted {removed} outbox mail older than {days} days.")


@mail.command("test")
@click.argument("address")
@click.pass_context
def mail_test(ctx: click.Context, address: str) -> None:
    """Send a test mail to ADDRESS through [mail] url now, and say what the server did."""
    from core import smtp

    app = state_of(ctx).app()
    conf = app.extensions["trivium.settings"]
    if not conf.mail.url:
        raise click.ClickException(
            "[mail] url is empty: mail goes to the outbox only (trivium mail outbox)"
        )
    server = smtp.parse_url(conf.mail.url)  # checked at start-up: names it below
    sender = smtp.sender_of(conf)
    try:
        message = smtp.build_message(
            sender,
            address,
            f"Test mail from {conf.instance.name}",
            f"This is a test of the mail settings of {conf.instance.name} "
            f"({conf.instance.base_url}).\n",
        )
        smtp.send_with(conf, message)
    except (smtp.MailRefused, smtplib.SMTPException, OSError) as exc:
        raise click.ClickException(f"not sent through {server.describe()}: {exc}") from exc
    click.echo(f"Sent a test mail from {sender} to {address} through {server.describe()}.")
