"""``trivium events``: the learning events' retention (see :func:`core.events.prune`)."""

from __future__ import annotations

from datetime import timedelta

import click

from core.cli.base import cli
from core.cli.base import state_of


@cli.group()
def events() -> None:
    """Learning events (xAPI statements) stored by the instance."""


@events.command("prune")
@click.option(
    "--older-than",
    "days",
    required=True,
    type=click.IntRange(1),
    help="Delete statements older than this many days.",
)
@click.option(
    "--verb",
    "verbs",
    multiple=True,
    help="A verb to prune (ADL short name or IRI); repeat for several. "
    "Default: progressed, the heartbeats' statements.",
)
@click.option("--dry-run", is_flag=True, help="Only count what would be deleted.")
@click.option("--yes", is_flag=True, help="Delete without asking (for a scheduled run).")
@click.pass_context
def events_prune(
    ctx: click.Context, days: int, verbs: tuple[str, ...], dry_run: bool, yes: bool
) -> None:
    """Delete old learning events of some verbs, for a retention policy.

    Progress, completions and grades are kept in their own tables; what goes
    is the statement history (and with it, those statements in people's data
    exports).  Deleted in small batches while the instance serves; audited
    as events.prune.  Run it daily from cron or a systemd timer with --yes.
    """
    from core import events as svc
    from core.auth.audit import audit
    from core.db import get_db
    from core.db import utcnow

    app = state_of(ctx).app()
    chosen = verbs or svc.PRUNED_BY_DEFAULT
    try:
        iris = sorted({svc.verb_iri(verb) for verb in chosen})
    except svc.UnknownVerb as exc:
        raise click.BadParameter(str(exc), param_hint="--verb") from exc
    before = utcnow() - timedelta(days=days)
    database = get_db(app)
    with app.app_context():
        found = svc.prune(database, before, iris, dry_run=True)
        shown = ", ".join(iris)
        if dry_run:
            click.echo(f"{found} statements ({shown}) are older than {days} days.")
            return
        if not found:
            click.echo(f"No statements ({shown}) older than {days} days.")
            return
        if not yes:
            click.confirm(
                f"Delete {found} statements ({shown}) older than {days} days?", abort=True
            )
        removed = svc.prune(database, before, iris)
        with database.session() as sess:
            detail = {"verbs": iris, "before": before.isoformat(), "removed": removed, "via": "cli"}
            audit(sess, None, "events.prune", "events", detail)
    click.echo(f"Deleted {removed} statements ({shown}) older than {days} days.")
