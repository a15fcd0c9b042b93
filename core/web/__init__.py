"""Server-rendered pages: the shared layout, assets, translations, error pages and slots.

Each page area is its own module with a blueprint (``core.web.pages``: home and
health check, ``core.web.account``: sign-up, log-in and the account page,
``core.web.learner``: catalog, dashboard, course and learn views,
``core.web.staff`` and ``core.web.admin``: teaching and operator pages).
:func:`init_app` wires what they share and mounts them.

Templates extend ``layout.html`` (blocks ``title``, ``head``, ``content``,
``scripts``) and import form helpers from ``macros/forms.html``.  Jinja
globals available to every template:

``asset_url(name)``
    URL of a built asset (``"app.css"``, ``"htmx.js"``) by its content-hashed name.
``csrf_token()``
    The session's CSRF token, for hidden form fields.
``slot(name, **context)``
    HTML that plugins add at a named place of a page (``template_slot`` hook).
``current_user``
    The logged-in :class:`core.models.User` or None.
``nav``
    Which top-navigation entries the user may see (:class:`NavState`).
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import Any

from babel import Locale
from babel.support import NullTranslations
from flask import Flask
from flask import current_app
from flask import g
from flask import request
from flask_babel import Babel
from flask_babel import get_locale
from flask_babel import get_translations
from sqlalchemy import bindparam
from sqlalchemy import exists
from sqlalchemy import select

from core import db
from core.auth import current_user
from core.config import Settings
from core.models import CourseRole
from core.web import assets
from core.web import errorpages
from core.web import slots

log = logging.getLogger(__name__)

#: Page modules, each exporting ``bp``, mounted in this order.
BLUEPRINT_MODULES = (
    "core.web.pages",
    "core.web.account",
    "core.web.learner",
    "core.web.staff",
    "core.web.admin",
)

#: Languages the interface ships in (``core/translations/<code>``).
LANGUAGES = ("en",)


@dataclass(frozen=True)
class NavState:
    """Which top-navigation entries the current visitor may see."""

    logged_in: bool
    teaching: bool
    admin: bool


#: One parsed :class:`babel.Locale` per shipped language, so that choosing a
#: request's locale does not parse a locale identifier every time.
_LOCALES = {code: Locale.parse(code) for code in LANGUAGES}


def _select_locale() -> Locale:
    return _LOCALES[request.accept_languages.best_match(LANGUAGES) or LANGUAGES[0]]


def _request_translations() -> NullTranslations:
    """This request's translations, looked up once per request and locale.

    Flask-Babel's own lookup walks its context, locale and domain on every
    string; pages call ``_()`` dozens of times.  The memo is kept next to
    Flask-Babel's per-request state and is used only while that state still
    holds the same locale and domain objects, so ``force_locale`` and
    ``refresh`` take effect as before.
    """
    state = g.get("_flask_babel")
    if state is None:
        fresh: NullTranslations = get_translations()
        return fresh
    locale = getattr(state, "babel_locale", None)
    domain = getattr(state, "babel_domain", None)
    memo = getattr(state, "trivium_translations", None)
    if memo is not None and memo[0] is locale and memo[1] is domain and locale is not None:
        translations: NullTranslations = memo[2]
        return translations
    translations = get_translations()
    state.trivium_translations = (
        getattr(state, "babel_locale", None),
        getattr(state, "babel_domain", None),
        translations,
    )
    return translations


def _install_gettext(app: Flask) -> None:
    """Give templates' ``_()``, ``ngettext`` and friends the per-request translations."""
    app.jinja_env.install_gettext_callables(  # type: ignore[attr-defined]
        gettext=lambda s: _request_translations().ugettext(s),
        ngettext=lambda s, p, n: _request_translations().ungettext(s, p, n),
        pgettext=lambda c, s: _request_translations().upgettext(c, s),
        npgettext=lambda c, s, p, n: _request_translations().unpgettext(c, s, p, n),
        newstyle=True,
    )


_TEACHES_ANY = select(exists().where(CourseRole.user_id == bindparam("user_id")))


def nav_state() -> NavState:
    """The top navigation of this request (memoised per request)."""
    cached: NavState | None = g.get("trivium_nav")
    if cached is not None:
        return cached
    user = current_user()
    if user is None:
        state = NavState(logged_in=False, teaching=False, admin=False)
    else:
        teaching = bool(
            user.can_create_courses
            or db.core_execute(db.session(), _TEACHES_ANY, {"user_id": user.id}).scalar()
        )
        state = NavState(logged_in=True, teaching=teaching, admin=user.is_admin)
    g.trivium_nav = state
    return state


def _template_context() -> dict[str, Any]:
    settings: Settings = current_app.extensions["trivium.settings"]
    return {
        "current_user": current_user(),
        "nav": nav_state(),
        "instance_name": settings.instance.name,
        "registration_mode": settings.accounts.registration,
    }


def has_endpoint(name: str) -> bool:
    """Whether a page exists (templates link to optional areas only when mounted)."""
    return name in current_app.view_functions


def current_locale() -> str:
    """The language of this response, for ``<html lang>``."""
    return str(get_locale() or LANGUAGES[0])


def init_app(app: Flask) -> None:
    """Set up translations, assets, error pages and slots, and mount every page blueprint."""
    from core.auth.csrf import csrf_token

    app.config.setdefault("BABEL_DEFAULT_LOCALE", LANGUAGES[0])
    app.config.setdefault("BABEL_TRANSLATION_DIRECTORIES", "translations")
    Babel(app, locale_selector=_select_locale)
    _install_gettext(app)
    app.jinja_env.globals["csrf_token"] = csrf_token
    app.jinja_env.globals["has_endpoint"] = has_endpoint
    app.jinja_env.globals["current_locale"] = current_locale
    app.context_processor(_template_context)
    assets.init_app(app)
    slots.init_app(app)
    errorpages.init_app(app)

    for name in BLUEPRINT_MODULES:
        app.register_blueprint(importlib.import_module(name).bp)
