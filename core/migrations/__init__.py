"""Core's Alembic environment and revisions (run through :mod:`core.schema`)."""
