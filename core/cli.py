"""The ``trivium`` command: instances, schema, users, jobs, serving, and plugin commands.

Commands that need an instance take it from ``--instance PATH`` or
``TRIVIUM_INSTANCE_PATH``.  Plugins add commands through ``register_commands``;
those run inside an application context of that instance.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import smtplib
import threading
from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING
from typing import Any
from typing import TypeVar
from typing import cast

import click
from argon2 import PasswordHasher
from argon2 import profiles
from flask import Flask
from sqlalchemy import func
from sqlalchemy import select

from core.config import ConfigError
from core.config import write_instance

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from core.models import User

log = logging.getLogger(__name__)
T = TypeVar("T")


def _startup_errors() -> tuple[type[Exception], ...]:
    """Errors of a broken instance or plugin set, shown without a traceback."""
    from core.plugins import DuplicateContentType
    from core.plugins import InitInstanceFailed
    from core.plugins import PluginLoadError
    from core.plugins import StartupError
    from core.schema import MigrationsFolderMissing
    from core.tasks import DuplicateActor
    from core.tasks import JobsConfigError

    return (
        ConfigError,
        PluginLoadError,
        DuplicateContentType,
        DuplicateActor,
        JobsConfigError,
        MigrationsFolderMissing,
        StartupError,
        InitInstanceFailed,
    )


@dataclass
class CliState:
    """What the ``trivium`` group passes to its commands: the instance and its app."""

    instance: Path | None = None
    _app: Flask | None = None
    _plugin_commands: dict[str, click.Command] | None = field(default=None, repr=False)

    def app(self) -> Flask:
        """The instance's app, created on first use.

        :raise click.UsageError: no instance was given.
        :raise click.ClickException: the instance or a plugin is broken.
        """
        if self._app is None:
            if self.instance is None:
                raise click.UsageError(
                    "no instance: pass --instance PATH or set TRIVIUM_INSTANCE_PATH"
                )
            from core import create_app

            try:
                self._app = create_app(self.instance)
            except _startup_errors() as exc:
                raise click.ClickException(str(exc)) from exc
        return self._app

    def close(self) -> None:
        """Stop the app's job worker and close its database connections."""
        if self._app is not None:
            close_app(self._app)
            self._app = None

    def plugin_commands(self) -> dict[str, click.Command]:
        """Commands from ``register_commands`` (none without a loadable instance)."""
        if self._plugin_commands is None:
            self._plugin_commands = {}
            if self.instance is None:
                return self._plugin_commands
            from core.plugins import PluginHost

            host: PluginHost = self.app().extensions["trivium.plugins"]
            for plugin, command in host.call_lists("register_commands"):
                if not isinstance(command, click.Command) or not command.name:
                    log.error("plugin=%s hook=register_commands error=not_a_click_command", plugin)
                    continue
                if command.name in BUILTIN_COMMANDS or command.name in self._plugin_commands:
                    log.warning(
                        "plugin=%s command=%s status=ignored reason=name_taken",
                        plugin,
                        command.name,
                    )
                    continue
                self._plugin_commands[command.name] = command
        return self._plugin_commands


def close_app(app: Flask) -> None:
    """Release what an app holds: its job worker, broker and database pools."""
    from core.db import get_db
    from core.tasks import get_jobs

    get_jobs(app).close()
    get_db(app).dispose()


def _state(ctx: click.Context) -> CliState:
    state = ctx.find_root().ensure_object(CliState)
    if state.instance is None and os.environ.get("TRIVIUM_INSTANCE_PATH"):
        # --help is handled before the envvar default is applied.
        state.instance = Path(os.environ["TRIVIUM_INSTANCE_PATH"])
    return state


def _remember_instance(
    ctx: click.Context, param: click.Parameter, value: Path | None
) -> Path | None:
    if value is not None:
        _state(ctx).instance = value
    return value


class TriviumGroup(click.Group):
    """The root group: built-in commands, then the instance's plugin commands."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Built-ins, plus plugin commands when the instance loads."""
        names = super().list_commands(ctx)
        try:
            names += sorted(_state(ctx).plugin_commands())
        except click.ClickException as exc:
            log.debug("cli=plugin_commands status=unavailable error=%s", exc.message)
        return names

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """A built-in command, or one a plugin registered."""
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        state = _state(ctx)
        if state.instance is None:
            return None
        return state.plugin_commands().get(cmd_name)


@click.group(cls=TriviumGroup)
@click.option(
    "--instance",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="TRIVIUM_INSTANCE_PATH",
    is_eager=True,
    callback=_remember_instance,
    help="The instance folder (default: $TRIVIUM_INSTANCE_PATH).",
)
@click.pass_context
def cli(ctx: click.Context, instance: Path | None) -> None:
    """Trivium, a federated plugin-based learning management system."""
    state = _state(ctx)
    ctx.call_on_close(state.close)
    if ctx.invoked_subcommand is not None and ctx.invoked_subcommand not in BUILTIN_COMMANDS:
        ctx.with_resource(state.app().app_context())


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="trivium")


# ---------------------------------------------------------------- init


@cli.command()
@click.argument("path", type=click.Path(file_okay=False, path_type=Path))
@click.option("--name", default="Trivium", show_default=True, help="The instance's name.")
@click.option("--base-url", help="Public URL (default: http://BIND).")
@click.option("--bind", default="127.0.0.1:8000", show_default=True, help="Address to serve on.")
@click.option("--force", is_flag=True, help="Overwrite an existing instance.toml.")
def init(path: Path, name: str, base_url: str | None, bind: str, force: bool) -> None:
    """Create an instance folder: instance.toml and secrets.toml (mode 0600)."""
    try:
        root = write_instance(
            path, name=name, base_url=base_url or f"http://{bind}", bind=bind, force=force
        )
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    _init_plugins(root)
    click.echo(f"Created {root / 'instance.toml'} and {root / 'secrets.toml'} (mode 0600).")
    click.echo(f"Next: trivium --instance {root} db upgrade")


def _init_plugins(root: Path) -> None:
    """Call ``init_instance`` on the new instance's plugins (no app is built)."""
    from core.plugins import init_instance

    try:
        init_instance(root)  # InitInstanceFailed is one of the start-up errors
    except _startup_errors() as exc:
        raise click.ClickException(str(exc)) from exc


# ---------------------------------------------------------------- db


@cli.group()
def db() -> None:
    """Database schema (Alembic migrations of core and plugins)."""


@db.command("upgrade")
@click.argument("target", default="heads")
@click.pass_context
def db_upgrade(ctx: click.Context, target: str) -> None:
    """Apply migrations up to TARGET (default: every branch's head)."""
    from core import schema

    app = _state(ctx).app()
    schema.upgrade(app, target)
    click.echo("Database at: " + (", ".join(schema.current(app)) or "(empty)"))


@db.command("current")
@click.pass_context
def db_current(ctx: click.Context) -> None:
    """Show the revisions the database is at."""
    from core import schema

    app = _state(ctx).app()
    revisions = schema.current(app)
    if not revisions:
        click.echo("(empty: run 'trivium db upgrade')")
    for revision in revisions:
        click.echo(schema.describe(app, revision))


@db.command("downgrade")
@click.argument("target")
@click.pass_context
def db_downgrade(ctx: click.Context, target: str) -> None:
    """Revert migrations down to TARGET (base, BRANCH@base, or a revision id)."""
    from core import schema

    app = _state(ctx).app()
    schema.downgrade(app, target)
    click.echo("Database at: " + (", ".join(schema.current(app)) or "(empty)"))


# ---------------------------------------------------------------- plugins


@cli.command("plugins")
@click.pass_context
def plugins_command(ctx: click.Context) -> None:
    """List the loaded plugins, their versions and the hooks they implement."""
    from core.plugins import PluginHost

    host: PluginHost = _state(ctx).app().extensions["trivium.plugins"]
    rows = [
        (p.name, p.version or "-", "yes" if p.builtin else "no", ", ".join(p.hooks))
        for p in host.info()
    ]
    _table(("name", "version", "builtin", "hooks"), rows)


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)]
        click.echo("  ".join(cells).rstrip())


# ---------------------------------------------------------------- users


@cli.group()
def users() -> None:
    """User accounts."""


@users.command("create")
@click.argument("email")
@click.option("--name", help="Display name (default: from the address).")
@click.option("--admin", is_flag=True, help="A site administrator.")
@click.option("--creator", is_flag=True, help="May create courses.")
@click.password_option(help="Prompted for when omitted.")
@click.pass_context
def users_create(
    ctx: click.Context, email: str, name: str | None, admin: bool, creator: bool, password: str
) -> None:
    """Create a local account with a password (hashed with argon2id).

    The password must pass the policy that sign-up and users set-password
    apply: long enough, not too long, not common, not made of the address.
    """
    from core.auth.passwords import PasswordRejected
    from core.auth.passwords import check_password_policy
    from core.config import Settings
    from core.db import get_db
    from core.models import AuditLog
    from core.models import Identity
    from core.models import User

    app = _state(ctx).app()
    settings: Settings = app.extensions["trivium.settings"]
    email = email.strip().lower()
    local, _, domain = email.partition("@")
    if not local or not domain:
        raise click.BadParameter(f"{email!r} is not an e-mail address", param_hint="EMAIL")
    try:
        check_password_policy(password, email, settings.accounts.password_min_length)
    except PasswordRejected as exc:
        raise click.BadParameter(exc.detail, param_hint="password") from exc
    password_hash = _password_hasher(settings.accounts.hash_profile).hash(password)
    with get_db(app).session() as sess:
        if sess.scalar(select(User.id).where(func.lower(User.email) == email)) is not None:
            raise click.ClickException(f"a user {email} already exists")
        user = User(
            email=email,
            display_name=name or email.split("@")[0].replace(".", " ").title(),
            password_hash=password_hash,
            is_admin=admin,
            can_create_courses=creator or admin,
        )
        user.identities.append(Identity(provider="local", subject=email))
        sess.add(user)
        sess.flush()
        sess.add(
            AuditLog(
                action="user.create",
                target=user.public_id,
                detail={"via": "cli", "admin": admin, "creator": creator or admin},
            )
        )
        role = "administrator" if admin else "course creator" if creator else "user"
        click.echo(f"Created {role} {email} (id {user.public_id}).")


@users.command("list")
@click.option("--state", type=click.Choice(["active", "inactive", "admin", "creator"]))
@click.option("--search", "q", help="Part of the e-mail address or name.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.pass_context
def users_list(ctx: click.Context, state: str | None, q: str | None, limit: int) -> None:
    """List accounts, newest first."""
    from core import operator
    from core.db import get_db

    with get_db(_state(ctx).app()).session() as sess:
        found, _ = operator.search_users(sess, q=q, state=cast(Any, state), limit=limit)
        rows = [
            (
                u.email,
                u.display_name,
                u.public_id,
                ",".join(
                    flag
                    for flag, on in (
                        ("admin", u.is_admin),
                        ("creator", u.can_create_courses and not u.is_admin),
                        ("2fa", u.totp_enabled),
                        ("inactive", not u.is_active),
                    )
                    if on
                )
                or "-",
                u.created_at.strftime("%Y-%m-%d"),
            )
            for u in found
        ]
    if not rows:
        click.echo("No users.")
        return
    _table(("email", "name", "id", "flags", "created"), rows)


def _account_change(ctx: click.Context, email: str, change: Callable[[Session, User], T]) -> T:
    """Run ``change(sess, user)`` on the account ``email`` and commit; refuse problems."""
    from core.auth.tokens import forget_user_tokens
    from core.db import session as db_session
    from core.errors import Problem
    from core.models import User as Account

    app = _state(ctx).app()
    address = email.strip().lower()
    # the context's own session: a notice mailed to the user joins its commit
    with app.app_context():
        sess = db_session()
        user = sess.scalar(select(Account).where(Account.email == address))
        if user is None:
            raise click.ClickException(f"no user {address}")
        try:
            outcome = change(sess, user)
        except Problem as exc:
            raise click.ClickException(f"{address}: {exc.detail}") from exc
        sess.commit()
        forget_user_tokens(sess, user.id)  # cached tokens carry the owner's rights
    return outcome


@users.command("set-password")
@click.argument("email")
@click.password_option(help="Prompted for when omitted.")
@click.pass_context
def users_set_password(ctx: click.Context, email: str, password: str) -> None:
    """Give EMAIL a new password; their sessions end (API tokens stay)."""
    from core import operator
    from core.auth.accounts import throttle

    def change(sess: Session, user: User) -> None:
        conf = _state(ctx).app().extensions["trivium.settings"]
        operator.set_password(sess, None, user, password, conf.accounts)

    _account_change(ctx, email, change)
    app = _state(ctx).app()
    with app.app_context():
        throttle().clear_account(email.strip().lower())
    click.echo(f"Set a new password for {email.strip().lower()}; their sessions ended.")
    if app.extensions["trivium.settings"].cache.url.startswith("memory"):
        # the serving processes keep their own failure counts
        click.echo(
            "A login lock-out of this account ends by itself within "
            "accounts.login_window_seconds (with a Redis cache, this command lifts it)."
        )


@users.command("reset-2fa")
@click.argument("email")
@click.pass_context
def users_reset_2fa(ctx: click.Context, email: str) -> None:
    """Turn EMAIL's second factor off (a lost device); their sessions end."""
    from core import operator

    changed = _account_change(
        ctx, email, lambda sess, user: operator.reset_second_factor(sess, None, user)
    )
    address = email.strip().lower()
    if changed:
        click.echo(f"Turned two-factor authentication off for {address}; their sessions ended.")
    else:
        click.echo(f"{address} has no second factor: nothing changed.")


@users.command("admin")
@click.argument("email")
@click.option("--revoke", is_flag=True, help="Take the site-admin role away instead.")
@click.pass_context
def users_admin(ctx: click.Context, email: str, revoke: bool) -> None:
    """Make EMAIL a site administrator (or, with --revoke, no longer one)."""
    from core import operator

    def change(sess: Session, user: User) -> bool:
        was = user.is_admin
        operator.set_admin(sess, None, user, not revoke)
        return was != user.is_admin

    changed = _account_change(ctx, email, change)
    address = email.strip().lower()
    if not changed:
        state = "was not" if revoke else "already is"
        click.echo(f"{address} {state} a site administrator: nothing changed.")
    else:
        click.echo(f"{address} is {'no longer ' if revoke else ''}a site administrator.")


@users.command("deactivate")
@click.argument("email")
@click.pass_context
def users_deactivate(ctx: click.Context, email: str) -> None:
    """Stop EMAIL logging in; their sessions and API tokens stop working at once."""
    from core import operator

    _account_change(ctx, email, lambda sess, user: operator.deactivate(sess, None, user))
    click.echo(f"Deactivated {email.strip().lower()}.")


@users.command("reactivate")
@click.argument("email")
@click.pass_context
def users_reactivate(ctx: click.Context, email: str) -> None:
    """Let the deactivated account EMAIL log in again."""
    from core import operator

    _account_change(ctx, email, lambda sess, user: operator.reactivate(sess, None, user))
    click.echo(f"Reactivated {email.strip().lower()}.")


def _password_hasher(profile: str) -> PasswordHasher:
    # argon2id with the instance's cost profile (as core.auth hashes them).
    params = profiles.CHEAPEST if profile == "cheapest" else profiles.RFC_9106_LOW_MEMORY
    return PasswordHasher.from_parameters(params)


# ---------------------------------------------------------------- jobs


@cli.group()
def jobs() -> None:
    """Background jobs recorded in the jobs table."""


@jobs.command("list")
@click.option("--state", type=click.Choice(["queued", "running", "done", "failed"]))
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.pass_context
def jobs_list(ctx: click.Context, state: str | None, limit: int) -> None:
    """List the most recently changed jobs (failed ones with their error)."""
    from core.tasks import get_jobs

    rows = get_jobs(_state(ctx).app()).list_jobs(state=state, limit=limit)
    if not rows:
        click.echo("No jobs." if state is None else f"No {state} jobs.")
        return
    table = [
        (
            str(j.id),
            j.state,
            j.actor,
            j.queue,
            str(j.attempts),
            j.updated_at.strftime("%Y-%m-%d %H:%M:%S"),
            _last_line(j.error),
        )
        for j in rows
    ]
    _table(("id", "state", "actor", "queue", "attempts", "updated (UTC)", "error"), table)


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:120] if lines else ""


@jobs.command("retry")
@click.argument("job_id", type=int)
@click.pass_context
def jobs_retry(ctx: click.Context, job_id: int) -> None:
    """Queue the failed job JOB_ID again."""
    from core.tasks import JobNotFound
    from core.tasks import JobNotRetryable
    from core.tasks import get_jobs

    try:
        get_jobs(_state(ctx).app()).retry(job_id)
    except JobNotFound as exc:
        raise click.ClickException(f"no job {job_id}") from exc
    except JobNotRetryable as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"Job {job_id} queued again.")


@jobs.command("purge")
@click.option("--days", default=7, show_default=True, type=click.IntRange(0), help="Age.")
@click.pass_context
def jobs_purge(ctx: click.Context, days: int) -> None:
    """Delete done jobs older than --days (failed ones are kept)."""
    from core.tasks import get_jobs

    count = get_jobs(_state(ctx).app()).purge(timedelta(days=days))
    click.echo(f"Deleted {count} done jobs.")


# ---------------------------------------------------------------- mail


@cli.group()
def mail() -> None:
    """Mail: the outbox, and a test of the SMTP settings ([mail] url)."""


@mail.command("outbox")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--unsent", is_flag=True, help="Only mail no SMTP server has accepted yet.")
@click.option(
    "--state",
    type=click.Choice(["outbox", "queued", "sent", "failed"]),
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
    with get_db(_state(ctx).app()).session() as sess:
        rows = [
            (
                str(m.id),
                m.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                m.state,
                str(m.attempts),
                m.to,
                m.subject[:50],
                _last_line(m.last_error)[:60] if m.state != "sent" else "",
            )
            for m in sess.scalars(query)
        ]
    if not rows:
        click.echo("No mail.")
        return
    _table(("id", "written (UTC)", "state", "tries", "to", "subject", "last error"), rows)


@mail.command("show")
@click.argument("mail_id", type=int)
@click.pass_context
def mail_show(ctx: click.Context, mail_id: int) -> None:
    """Print the outbox mail MAIL_ID (it may hold a password-reset link)."""
    from core.db import get_db
    from core.models import OutboxMail

    with get_db(_state(ctx).app()).session() as sess:
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

    app = _state(ctx).app()
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

    app = _state(ctx).app()
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

    app = _state(ctx).app()
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


# ---------------------------------------------------------------- catalog


@cli.group()
def catalog() -> None:
    """The catalog's search index."""


@catalog.command("reindex")
@click.option(
    "--optimize",
    is_flag=True,
    help="Then merge SQLite's full-text index into one segment (takes a while on a large index).",
)
@click.pass_context
def catalog_reindex(ctx: click.Context, optimize: bool) -> None:
    """Bring this instance's courses' catalog entries in line with the courses."""
    from core import catalog as index
    from core.db import get_db
    from core.models import CatalogEntry

    app = _state(ctx).app()
    with app.app_context(), get_db(app).session() as sess:
        changed = index.reindex_local(sess)
        listed = select(func.count()).where(CatalogEntry.deleted.is_(False))
        local = sess.scalar(listed.where(CatalogEntry.source == index.LOCAL)) or 0
        total = sess.scalar(listed) or 0
    click.echo(
        f"Re-indexed this instance's courses: {changed} entries changed; "
        f"{local} of its courses and {total} entries in all are in the catalog."
    )
    if optimize:
        with get_db(app).session() as sess:
            optimized = index.optimize_index(sess)
        click.echo(
            "Optimized the full-text index."
            if optimized
            else "Nothing to optimize: PostgreSQL's index needs no merging."
        )


# ---------------------------------------------------------------- serving


@cli.command()
@click.option("--bind", help="host:port (default: server.bind).")
@click.option("--workers", type=click.IntRange(1), help="Processes (default: server.workers).")
@click.option("--threads", type=click.IntRange(1), help="Threads each (default: server.threads).")
@click.pass_context
def serve(ctx: click.Context, bind: str | None, workers: int | None, threads: int | None) -> None:
    """Serve the instance with gunicorn (gthread workers)."""
    from core import serve as server

    server.run(_state(ctx).app(), bind=bind, workers=workers, threads=threads)


@cli.command()
@click.option("--processes", "-p", default=1, show_default=True, type=click.IntRange(1))
@click.option("--threads", "-t", type=click.IntRange(1), help="Default: jobs.worker_threads.")
@click.option("--queue", "-Q", "queues", multiple=True, help="Only these queues (repeatable).")
@click.pass_context
def worker(
    ctx: click.Context, processes: int, threads: int | None, queues: tuple[str, ...]
) -> None:
    """Run background jobs until stopped (SIGTERM or Ctrl-C).

    For Redis or RabbitMQ brokers this is how jobs run; with the "db" broker it
    runs the database consumer on its own (for jobs.embedded_worker = false).
    """
    state = _state(ctx)
    app = state.app()
    if processes == 1:
        _run_worker(app, list(queues) or None, threads)
        return
    assert state.instance is not None
    _run_worker_processes(str(state.instance), processes, list(queues) or None, threads)


def _wait_for_stop_signal() -> None:
    stop = threading.Event()

    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while not stop.wait(1.0):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run_worker(app: Flask, queues: list[str] | None, threads: int | None) -> None:
    from core.tasks import get_jobs

    jobs = get_jobs(app)
    jobs.start_worker(queues=queues, threads=threads)
    try:
        _wait_for_stop_signal()
    finally:
        jobs.stop_worker()


def _worker_process(instance: str, queues: list[str] | None, threads: int | None) -> None:
    from core import create_app

    _run_worker(create_app(instance), queues, threads)


def _run_worker_processes(
    instance: str, processes: int, queues: list[str] | None, threads: int | None
) -> None:
    # "spawn": each child builds its own app, nothing (sockets, threads) is inherited.
    mp = multiprocessing.get_context("spawn")
    children = [
        mp.Process(target=_worker_process, args=(instance, queues, threads), name=f"worker-{n}")
        for n in range(processes)
    ]
    stop = threading.Event()

    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for child in children:
            child.start()
        while not stop.wait(1.0):
            if any(not c.is_alive() for c in children):
                log.error("worker=child status=exited action=stopping_all")
                break
    finally:
        for child in children:
            if child.is_alive() and child.pid is not None:
                child.terminate()
        for child in children:
            child.join(timeout=60)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not stop.is_set():
        raise click.ClickException("a worker process exited unexpectedly")


# ---------------------------------------------------------------- demo


@cli.command()
@click.option(
    "--path",
    type=click.Path(file_okay=False, path_type=Path),
    help="Instance folder (default: --instance, else instances/demo); with --peers, "
    "the folder of their folders (default: instances/demo-network).",
)
@click.option(
    "--bind",
    help="Address of a new instance (default: 127.0.0.1:8000); with --peers, of the "
    "first, the others on the next ports (default: 127.0.0.1:8101).",
)
@click.option(
    "--peers",
    type=click.IntRange(2, 3),
    metavar="N",
    help="Start N demo instances of their own (2 or 3) and let plugins join them: "
    "with federation, each catalog lists the others' courses.",
)
@click.option(
    "--public",
    is_flag=True,
    help="Allow --bind on an address other machines reach, although every demo "
    "account's password is published.",
)
@click.option("--serve/--no-serve", "serve_it", default=True, help="Serve it afterwards.")
@click.pass_context
def demo(
    ctx: click.Context,
    path: Path | None,
    bind: str | None,
    peers: int | None,
    public: bool,
    serve_it: bool,
) -> None:
    """Create a demo instance with sample data (once), then serve it.

    With --peers N: N demo instances, each served by a process of its own and
    joined together by plugins (federation peers them).  Ctrl-C stops them.
    """
    from core import demo as demo_data
    from core import serve as server

    if peers is not None:
        _demo_network(ctx, peers, path or demo_data.NETWORK_ROOT, bind, public, serve_it)
        return
    root = path or _state(ctx).instance or demo_data.DEFAULT_PATH
    if bind is not None:
        try:
            demo_data.check_bind(bind, public=public)
        except demo_data.BadBindAddress as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param_hint="'--bind'") from exc
    try:
        instance = demo_data.prepare(root, bind=bind or "127.0.0.1:8000")
    except _demo_errors() as exc:
        raise click.ClickException(str(exc)) from exc
    ctx.call_on_close(lambda: close_app(instance.app))
    if serve_it:
        try:
            demo_data.check_served_bind(instance, public=public)
        except demo_data.BadBindAddress as exc:
            raise click.ClickException(str(exc)) from exc
    if instance.created:
        click.echo(f"Created the demo instance in {instance.path}.")
    click.echo("Added the sample data." if instance.seeded else "Sample data already present.")
    click.echo(f"\nTrivium demo: {instance.url}")
    _demo_logins()
    if serve_it:
        click.echo("")
        server.run(instance.app)


def _demo_errors() -> tuple[type[Exception], ...]:
    """What stops ``trivium demo`` with a message: a broken instance, or not a demo one."""
    from core.demo import NotADemoInstance

    return (*_startup_errors(), NotADemoInstance)


def _demo_network(
    ctx: click.Context, count: int, root: Path, bind: str | None, public: bool, serve_it: bool
) -> None:
    """``trivium demo --peers N``: N demo instances, served, joined by plugins."""
    from core import demo as demo_data

    try:
        instances = demo_data.prepare_network(
            count, root, bind=bind or demo_data.NETWORK_BIND, public=public
        )
    except demo_data.BadBindAddress as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param_hint="'--bind'") from exc
    except _demo_errors() as exc:
        raise click.ClickException(str(exc)) from exc
    for instance in instances:
        ctx.call_on_close(lambda app=instance.app: close_app(app))
    for instance in instances:
        done = "added its sample data" if instance.seeded else "sample data already present"
        made = "created" if instance.created else "reused"
        click.echo(f"{instance.name}: {made} {instance.path}, {done}.")
    if not serve_it:
        click.echo(f"Prepared {count} demo instances; plugins join them when they are served.")
        return
    try:
        for instance in instances:
            demo_data.check_served_bind(instance, public=public)
    except demo_data.BadBindAddress as exc:
        raise click.ClickException(str(exc)) from exc
    # SIGTERM and a closed terminal (SIGHUP) stop the servers as Ctrl-C does:
    # each runs in a session of its own, which the terminal's hang-up misses.
    stopping = (signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, signal.default_int_handler) for sig in stopping}
    try:
        with demo_data.serving(instances) as servers:
            lines = demo_data.join(instances)
            click.echo(f"\nTrivium demo, {count} instances:")
            for instance in instances:
                click.echo(f"  {instance.name:<34} {instance.url}")
            for line in lines:
                click.echo(line)
            _demo_logins()
            click.echo("Server logs: serve.log in each folder. Ctrl-C stops them.")
            exited = demo_data.wait_exit(servers)
            raise click.ClickException(
                f"the server of {exited.instance.name} exited; see {exited.log_path}"
            )
    except KeyboardInterrupt:
        click.echo("\nStopped.")
    except (demo_data.PortInUse, demo_data.ServerFailed) as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _demo_logins() -> None:
    """Print the demo accounts and their password."""
    from core import demo as demo_data

    click.echo(f"Password of every demo account: {demo_data.DEMO_PASSWORD}")
    for role, email in demo_data.logins():
        click.echo(f"  {role:<10}  {email}")


BUILTIN_COMMANDS = frozenset(cli.commands)
