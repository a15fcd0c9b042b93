"""Trivium's built-in plugins; each loads through the ``trivium.plugins`` entry points."""
