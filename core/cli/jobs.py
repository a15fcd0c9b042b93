"""``trivium jobs``: background jobs (list, retry, purge)."""

from __future__ import annotations

from datetime import timedelta

import click

from core.cli.base import cli
from core.cli.base import state_of
from core.cli.base import table
from core.errors import last_line


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

    rows = get_jobs(state_of(ctx).app()).list_jobs(state=state, limit=limit)
    if not rows:
        click.echo("No jobs." if state is None else f"No {state} jobs.")
        return
    listed = [
        (
            str(j.id),
            j.state,
            j.actor,
            j.queue,
            str(j.attempts),
            j.updated_at.strftime("%Y-%m-%d %H:%M:%S"),
            last_line(j.error, 120),
        )
        for j in rows
    ]
    table(("id", "state", "actor", "queue", "attempts", "updated (UTC)", "error"), listed)


@jobs.command("retry")
@click.argument("job_id", type=int)
@click.pass_context
def jobs_retry(ctx: click.Context, job_id: int) -> None:
    """Queue the failed job JOB_ID again."""
    from core.tasks import JobNotFound
    from core.tasks import JobNotRetryable
    from core.tasks import get_jobs

    try:
        get_jobs(state_of(ctx).app()).retry(job_id)
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

    count = get_jobs(state_of(ctx).app()).purge(timedelta(days=days))
    click.echo(f"Deleted {count} done jobs.")
