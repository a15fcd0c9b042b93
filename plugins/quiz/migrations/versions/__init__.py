"""Alembic revisions of the ``quiz`` branch (``register_migrations``)."""
