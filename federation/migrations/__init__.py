"""Alembic revisions of the ``federation`` branch (``register_migrations``)."""
