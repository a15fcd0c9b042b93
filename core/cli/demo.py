"""``trivium demo``: demo instances with sample accounts and courses, served."""

from __future__ import annotations

import signal
from pathlib import Path

import click

from core.cli.base import cli
from core.cli.base import close_app
from core.cli.base import startup_errors
from core.cli.base import state_of


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
    root = path or state_of(ctx).instance or demo_data.DEFAULT_PATH
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

    return (*startup_errors(), NotADemoInstance)


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
