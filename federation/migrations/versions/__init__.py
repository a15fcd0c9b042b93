"""Revisions of the ``federation`` branch, applied by ``trivium db upgrade``."""
