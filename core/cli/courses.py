"""``trivium courses``: an operator's course export and import (see :mod:`core.course_transfer`)
and bulk enrolment of a class list (see :func:`core.courses.enrol_many`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import click
from sqlalchemy import func
from sqlalchemy import select

from core.cli.base import cli
from core.cli.base import new_private_file
from core.cli.base import state_of


@cli.group()
def courses() -> None:
    """Course export and import, and enrolling a class list."""


@courses.command("export")
@click.argument("course_id")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this new file (readable by its owner only) instead of standard output.",
)
@click.pass_context
def courses_export(ctx: click.Context, course_id: str, output: Path | None) -> None:
    """Write the course COURSE_ID (its public id) as one JSON course export.

    The same document as the builder page's Export: structure, item settings
    and the plugins' course data (answer keys included), no learner data.
    Audited as course.export with "via": "cli".  An existing file is never
    replaced.
    """
    from core import course_transfer as transfer
    from core import courses as svc
    from core.db import session as db_session
    from core.errors import Problem

    app = state_of(ctx).app()
    with app.app_context():
        sess = db_session()  # the one the plugins' export_course_data read with
        try:
            course = svc.get_course(sess, course_id)
            document = transfer.export_course(sess, course)
        except Problem as exc:
            raise click.ClickException(f"{course_id}: {exc.detail}") from exc
        transfer.record_export(sess, None, course, "cli")
        data = transfer.to_json(document)
        if output is None:
            sess.commit()
            click.echo(data.decode())
            return
        fd = new_private_file(output)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            sess.commit()
        except BaseException:
            output.unlink(missing_ok=True)
            raise
    click.echo(f"Wrote course {course_id} to {output} ({len(data):,} bytes).")


@courses.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--owner", "owner_email", required=True, help="The new course's instructor.")
@click.pass_context
def courses_import(ctx: click.Context, file: Path, owner_email: str) -> None:
    """Create a new draft course from the course export FILE, owned by --owner.

    All or nothing: a refused document stores nothing and says why.  Audited
    as course.import with "via": "cli".
    """
    from core import course_transfer as transfer
    from core.db import session as db_session
    from core.errors import Problem
    from core.models import User

    app = state_of(ctx).app()
    address = owner_email.strip().lower()
    with app.app_context():
        sess = db_session()  # the one the plugins' import_course_data write with
        owner = sess.scalar(select(User).where(func.lower(User.email) == address))
        if owner is None or not owner.is_active:
            raise click.ClickException(f"no active user {address}")
        try:
            document = transfer.parse_bytes(file.read_bytes())
            course = transfer.import_course(sess, owner, document, via="cli")
        except Problem as exc:
            sess.rollback()
            raise click.ClickException(_refusal(exc)) from exc
        sess.commit()
        click.echo(
            f"Imported {file} as the draft course {course.public_id} "
            f"({course.title!r}), owned by {address}."
        )


@courses.command("enrol")
@click.argument("course_id")
@click.argument("file", type=click.File("rb"))
@click.option("--dry-run", is_flag=True, help="Only say what would happen; store nothing.")
@click.pass_context
def courses_enrol(ctx: click.Context, course_id: str, file: BinaryIO, dry_run: bool) -> None:
    """Enrol the e-mail addresses in FILE as learners of the course COURSE_ID.

    FILE is UTF-8 text or CSV, or - for standard input: the cells of a column
    headed "email", otherwise every address in it; at most 1,000.  Addresses
    with no active account are listed and skipped (that is no error); a
    malformed entry refuses the whole file and stores nothing.  Each
    enrolment is audited as enrolment.add with "via": "cli".
    """
    from core import courses as svc
    from core.db import session as db_session
    from core.errors import Problem

    data = file.read(svc.MAX_CLASS_LIST_BYTES + 1)
    app = state_of(ctx).app()
    with app.app_context():
        sess = db_session()  # the one the plugins' track_event listeners write with
        try:
            course = svc.get_course(sess, course_id)
        except Problem as exc:
            raise click.ClickException(f"{course_id}: {exc.detail}") from exc
        try:
            entries = svc.read_class_list(data)
            result = svc.enrol_many(sess, None, course, entries, dry_run=dry_run, via="cli")
        except Problem as exc:
            sess.rollback()
            raise click.ClickException(_refusal(exc)) from exc
        if not dry_run:
            sess.commit()
        title = course.title
    click.echo(
        f"Dry run for {title!r} ({course_id}); nothing was stored."
        if dry_run
        else f"Enrolled the class list in {title!r} ({course_id})."
    )
    click.echo(f"{'Would enrol' if dry_run else 'Enrolled'}: {len(result.enrolled)}")
    click.echo(f"Already enrolled: {len(result.already)}")
    click.echo(f"Course staff, not enrolled: {len(result.staff)}")
    click.echo(f"No active account, not enrolled: {len(result.unknown)}")
    for address in result.unknown:
        click.echo(f"  {address}")


def _refusal(exc: Exception) -> str:
    from core.errors import Problem

    text = f"refused: {exc.detail}" if isinstance(exc, Problem) else str(exc)
    errors = exc.extra.get("errors") if isinstance(exc, Problem) else None
    for error in errors or []:
        where = error.get("loc") or f"entry {error.get('position')} {error.get('value')!r}"
        text += f"\n  {where}: {error.get('msg')}"
    return text
