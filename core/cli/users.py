"""``trivium users``: an operator's account commands (create, list, password, 2FA, roles, state,
a person's data export)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any
from typing import TypeVar
from typing import cast

import click
from argon2 import PasswordHasher
from argon2 import profiles
from sqlalchemy import func
from sqlalchemy import select
from sqlalchemy.orm.exc import StaleDataError

from core.cli.base import cli
from core.cli.base import new_private_file
from core.cli.base import state_of
from core.cli.base import table

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from core.models import User

T = TypeVar("T")


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

    app = state_of(ctx).app()
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
@click.option("--state", type=click.Choice(["active", "inactive", "erased", "admin", "creator"]))
@click.option("--search", "q", help="Part of the e-mail address or name.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.pass_context
def users_list(ctx: click.Context, state: str | None, q: str | None, limit: int) -> None:
    """List accounts, newest first."""
    from core import operator
    from core.db import get_db

    with get_db(state_of(ctx).app()).session() as sess:
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
                        ("inactive", not u.is_active and u.erased_at is None),
                        ("erased", u.erased_at is not None),
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
    table(("email", "name", "id", "flags", "created"), rows)


def _account_change(ctx: click.Context, email: str, change: Callable[[Session, User], T]) -> T:
    """Run ``change(sess, user)`` on the account ``email`` and commit; refuse problems."""
    from core.auth.tokens import forget_user_tokens
    from core.db import session as db_session
    from core.errors import Problem
    from core.models import User as Account

    app = state_of(ctx).app()
    address = email.strip().lower()
    # the context's own session: a notice mailed to the user joins its commit
    with app.app_context():
        sess = db_session()
        user = sess.scalar(select(Account).where(Account.email == address))
        if user is None:
            raise click.ClickException(f"no user {address}")
        try:
            outcome = change(sess, user)
            sess.commit()
        except Problem as exc:
            sess.rollback()
            raise click.ClickException(f"{address}: {exc.detail}") from exc
        except StaleDataError as exc:
            sess.rollback()
            raise click.ClickException(
                f"{address} was changed meanwhile (erased?); nothing was saved: run it again"
            ) from exc
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
        conf = state_of(ctx).app().extensions["trivium.settings"]
        operator.set_password(sess, None, user, password, conf.accounts)

    _account_change(ctx, email, change)
    app = state_of(ctx).app()
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


@users.command("erase")
@click.argument("email")
@click.option("--yes", is_flag=True, help="Erase without asking for confirmation.")
@click.pass_context
def users_erase(ctx: click.Context, email: str, yes: bool) -> None:
    """Erase the account EMAIL for good (GDPR right to erasure).

    Its address, name, password, second factor, logins, tokens, staff roles
    and mail go; its learning records (progress, completions, quiz attempts,
    events) stay under an account that names no one.  See core/erasure.py.
    """
    from core import erasure

    address = email.strip().lower()
    if not yes:
        click.confirm(f"Erase {address} for good? This cannot be undone", abort=True)
    done = _account_change(
        ctx, email, lambda sess, user: erasure.erase_account(sess, None, user, via="cli")
    )
    with state_of(ctx).app().app_context():
        erasure.after_commit(done)
    click.echo(
        f"Erased {address} (account {done.user}): {done.identities} logins, {done.tokens} "
        f"API tokens, {done.staff_roles} staff roles, {done.enrolments_withdrawn} enrolments "
        f"withdrawn, {done.mail + done.mail_jobs} mails, {done.events} statements anonymised."
    )
    for public_id, title in done.unstaffed:
        click.echo(f"No instructor is left in course {public_id} ({title}): give it one.")


@users.command("export")
@click.argument("email")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this new file (readable by its owner only) instead of standard output.",
)
@click.pass_context
def users_export(ctx: click.Context, email: str, output: Path | None) -> None:
    """Write everything the instance stores about EMAIL as one JSON document.

    For a request for a copy of one's data (GDPR articles 15 and 20) that
    arrives by letter; the same document as the account page's "Download my
    data".  Audited as account.export with "via": "cli".  An existing file is
    never replaced.
    """
    from core import privacy
    from core.db import session as db_session
    from core.models import User as Account

    app = state_of(ctx).app()
    address = email.strip().lower()
    with app.app_context():
        sess = db_session()  # the one the plugins' export_user_data read with
        user = sess.scalar(select(Account).where(Account.email == address))
        if user is None:
            raise click.ClickException(f"no user {address}")
        fd = new_private_file(output) if output is not None else None
        try:
            document = privacy.export_user(sess, user)
            privacy.record_export(sess, None, user, "cli")
            sess.commit()
        except BaseException:
            if fd is not None and output is not None:
                os.close(fd)
                output.unlink()
            raise
    data = privacy.to_json(document)
    if fd is None:
        click.echo(data.decode())
    else:
        assert output is not None
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
        except OSError as exc:
            output.unlink(missing_ok=True)  # no partial copy left behind
            raise click.ClickException(f"could not write {output}: {exc}") from exc
        click.echo(f"Wrote the data of {address} to {output} ({len(data):,} bytes).")
    if document["plugins_failed"]:
        failed = ", ".join(document["plugins_failed"])
        click.echo(f"Incomplete: plugin(s) {failed} failed to export (see the log).", err=True)


def _password_hasher(profile: str) -> PasswordHasher:
    # argon2id with the instance's cost profile (as core.auth hashes them).
    params = profiles.CHEAPEST if profile == "cheapest" else profiles.RFC_9106_LOW_MEMORY
    return PasswordHasher.from_parameters(params)
