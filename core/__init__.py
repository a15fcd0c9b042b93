"""Trivium core: the app factory and the public API plugins may use.

A plugin imports ``hookimpl`` from here and the documented modules
(``core.content``, ``core.events``, ``core.tasks``, ``core.errors``,
``core.rbac``, ``core.db``, ``core.progress`` (``record_result``, ``announce``),
``core.api`` (and ``core.api.courses``'s ``load_course``, ``load_item``,
``PageQuery``, ``cursor_key``, ``user_brief``, ``Body`` for course-scoped
endpoints), ``core.models`` (to query and reference core's tables; change them
only through core's functions), ``core.auth`` (and ``core.auth.audit.audit``
to record an operator's action), ``core.web.forms.FormState`` (what the form
macros of ``macros/forms.html`` render), ``core.reports.csv_cell`` (formula-safe
CSV cells), ``core.cache``, ``core.config.Settings``,
``core.catalog`` (``search``, ``apply_changes``, ``delete_source``,
``local_changes``, ``local_head``, ``reindex_local``), ``core.courses``
(``create_course``, ``change_status``, to create courses as an operator's
command would) and ``core.demo`` (``DemoInstance``, handed to the
``demo_instances_started`` hook, and the demo accounts such as
``INSTRUCTOR``)) and ``core.plugins.StartupError`` (raised from ``startup``
to stop start-up); nothing else of core is part of the contract.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Flask

from core.hookspecs import hookimpl

__all__ = ["create_app", "hookimpl"]

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"


def create_app(
    instance_path: str | os.PathLike[str] | None = None,
    test_config: Mapping[str, Any] | None = None,
    *,
    extra_plugins: Mapping[str, object] | None = None,
) -> Flask:
    """Create a Trivium application for one instance.

    :param instance_path: the instance folder holding ``instance.toml``;
        ``TRIVIUM_INSTANCE_PATH`` if omitted.
    :param test_config: nested settings applied over the files and environment.
    :param extra_plugins: plugin objects to register by name besides the
        entry points (tests and embedding applications).
    :raise core.config.ConfigError: the configuration is invalid.
    :raise core.plugins.PluginLoadError: a plugin cannot be loaded.
    :raise core.plugins.StartupError: a plugin's ``startup`` hook finds the
        instance unable to run (its message says what to fix).
    """
    from werkzeug.middleware.proxy_fix import ProxyFix
    from whitenoise import WhiteNoise

    from core import api
    from core import cache
    from core import db
    from core import errors
    from core import generations
    from core import headers
    from core import logconfig
    from core import readcache
    from core import tasks
    from core import web
    from core.application import Trivium
    from core.auth import views as auth_views
    from core.auth.sessions import SessionCookies
    from core.config import load_settings
    from core.plugins import PluginHost
    from core.plugins import StartupError

    settings = load_settings(instance_path, test_config)
    logconfig.configure()

    https = settings.instance.base_url.startswith("https://")
    app = Trivium("core", instance_path=settings.path, static_folder=None)
    app.config.update(
        SECRET_KEY=settings.instance.secret_key,
        MAX_CONTENT_LENGTH=settings.instance.max_request_bytes,
        SESSION_COOKIE_NAME="trivium_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.accounts.secure_cookies or https,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=settings.accounts.session_lifetime_hours),
        TESTING=settings.testing,
        JSON_SORT_KEYS=False,
    )
    app.extensions["trivium.settings"] = settings
    app.session_interface = SessionCookies()

    errors.init_app(app)
    database = db.init_app(
        app, settings.database.url, settings.database.replica_url, echo=settings.database.echo
    )
    cache.init_app(app, settings.cache.url)
    readcache.init_app(
        app,
        database,
        settings.path,
        settings.cache.read_seconds,
        redis_url=settings.cache.url if settings.cache.url.startswith("redis") else "",
        # the layout's name in it: processes hashing keys to other slots
        # (another release) must not move each other's counters
        channel=f"trivium:{generations.FILE_NAME}:{settings.instance.base_url}",
    )

    host = PluginHost(settings.plugins, trace=bool(os.environ.get("TRIVIUM_TRACE_HOOKS")))
    app.extensions["trivium.plugins"] = host
    from core.builtin import register_defaults

    register_defaults(host)
    for name, plugin in (extra_plugins or {}).items():
        host.register(plugin, name)
    host.load_entry_points()
    host.check()
    host.collect_content_types()

    # -- features (each module wires itself; order matters only for blueprints)
    app.register_blueprint(api.bp)
    auth_views.init_app(app)
    tasks.init_app(app)
    web.init_app(app)
    # -- end of features

    for plugin_name, blueprint in host.call_lists("register_blueprints"):
        try:
            app.register_blueprint(blueprint)
        except Exception as exc:
            host.record_failure(plugin_name, "register_blueprints", exc)

    if settings.server.proxy_hops:
        hops = settings.server.proxy_hops
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops
        )
    app.wsgi_app = WhiteNoise(  # type: ignore[method-assign]
        app.wsgi_app,
        root=str(STATIC_DIR),
        prefix="static/",
        max_age=3600,
        immutable_file_test=web.assets.immutable_file,
    )
    # Outermost, so static files get the security headers too.
    headers.init_app(app, https=https)
    try:
        host.call_startup(app)
    except StartupError:
        tasks.get_jobs(app).close()
        database.dispose()
        raise
    return app
