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
    type=click.IntRange(1, 36_500),
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

    progressed statements are the heartbeats and the other reports that did
    not complete an item (score changes included); the progress table keeps
    only each learner's latest state, so their history goes, and with it
    those statements in people's data exports.  Deleted in small batches
    while the instance serves; each run that deletes something is audited as
    events.prune (one stopped partway too, with what it deleted).  Run it
    daily from cron or a systemd timer with --yes.
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
    shown = ", ".join(iris)
    with app.app_context():
        if dry_run or not yes:
            found = svc.prune(database, before, iris, dry_run=True)
            if dry_run:
                click.echo(f"{found} statements ({shown}) are older than {days} days.")
                return
            if not found:
                click.echo(f"No statements ({shown}) older than {days} days.")
                return
            click.confirm(
                f"Delete {found} statements ({shown}) older than {days} days?", abort=True
            )
        removed = [0]

        def count(deleted: int) -> None:
            removed[0] += deleted

        finished = False
        try:
            svc.prune(database, before, iris, done=count)
            finished = True
        finally:
            if removed[0]:  # a run that deleted nothing changed nothing
                detail = {
                    "verbs": iris,
                    "before": before.isoformat(),
                    "removed": removed[0],
                    "via": "cli",
                }
                if not finished:
                    detail["interrupted"] = True
                with database.session() as sess:
                    audit(sess, None, "events.prune", "events", detail)
    click.echo(f"Deleted {removed[0]} statements ({shown}) older than {days} days.")
