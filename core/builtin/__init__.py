"""Core's default plugins: ordinary hook implementations any plugin can override."""

from __future__ import annotations

from core.plugins import PluginHost


def register_defaults(host: PluginHost) -> None:
    """Register core's built-in plugins on ``host``."""
    from core.auth import mail
    from core.auth import tokens
    from core.builtin import page

    host.register_builtin(page, "core.page")
    host.register_builtin(tokens, "core.tokens")
    host.register_builtin(mail, "core.mail")
