"""Template slots: named places in core's pages where plugins add HTML.

A template calls ``{{ slot("item_after", item=item, course=course) }}``; every
``template_slot`` implementation is asked for a fragment, and the fragments
are joined in call order.  Fragments must be :class:`markupsafe.Markup`
(already safe HTML); anything else is escaped.  A plugin that raises is logged
(``plugin=<name> hook=template_slot``) and the page shows a short notice
naming it instead of its fragment, so one broken plugin cannot take the page
down.

Core's slots: ``head`` (inside ``<head>``), ``nav`` (end of the top
navigation), ``dashboard`` (learner dashboard), ``course_sidebar`` (course
page and learn view), ``item_after`` (after an item's content in the learn
view), ``admin_nav`` (extra ``<li>`` tabs of the administration pages).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask
from flask import current_app
from flask_babel import gettext
from markupsafe import Markup
from markupsafe import escape

from core.plugins import PluginHost

log = logging.getLogger(__name__)

SLOTS = frozenset({"head", "nav", "dashboard", "course_sidebar", "item_after", "admin_nav"})


class UnknownSlot(LookupError):
    """A template named a slot that core does not define (a typo in a template)."""


def render_slot(name: str, **context: Any) -> Markup:
    """Every plugin's fragment for slot ``name``, joined; failures become a notice.

    :param name: one of :data:`SLOTS`.
    :param context: what the page offers plugins at this slot (course, item, user...).
    :raise UnknownSlot: ``name`` is not a slot of core's templates.
    """
    if name not in SLOTS:
        raise UnknownSlot(name)
    host: PluginHost = current_app.extensions["trivium.plugins"]
    before = len(host.failures)
    fragments = host.call("template_slot", slot=name, context=context)
    parts = [escape(fragment) for fragment in fragments]
    failed = {f.plugin for f in host.failures[before:] if f.hook == "template_slot"}
    for plugin in sorted(failed):
        parts.append(_failure_notice(name, plugin))
    return Markup("").join(parts)


def _failure_notice(slot: str, plugin: str) -> Markup:
    """Where plugin output failed, say which plugin (as markup valid at that place)."""
    if slot == "head":
        return Markup("<!-- plugin {} failed -->").format(plugin.replace("-", "_"))
    message = gettext("The plugin %(name)s failed to show its part of this page.", name=plugin)
    if slot in {"nav", "admin_nav"}:
        return Markup('<li class="plugin-failed" role="status">{}</li>').format(message)
    return Markup('<p class="plugin-failed" role="status">{}</p>').format(message)


def init_app(app: Flask) -> None:
    """Offer ``slot()`` to templates."""
    app.jinja_env.globals["slot"] = render_slot
