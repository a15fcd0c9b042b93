"""Operator pages for peering: ``/admin/peers`` (site admins).

The browser counterpart of the JSON API in :mod:`federation.admin` and of
``trivium peers``: the list of peers with their state, pinned keys and
catalog sync health, a form to add a peer by URL (its document and keys are
fetched and pinned; it starts ``pending``), and buttons to approve, suspend,
refresh a peer's document and keys, or remove it after a confirmation page.
Every page needs the same ``federation.peers`` permission as the API, every
change is audited like the API's, and a refused change stores nothing.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from flask import Blueprint
from flask import current_app
from flask import flash
from flask import redirect
from flask import render_template
from flask import request
from flask import url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext
from markupsafe import Markup
from markupsafe import escape
from werkzeug.wrappers.response import Response as BaseResponse

from core import db
from core import rbac
from core.auth import current_user
from core.auth import require_user
from core.config import Settings
from core.errors import Unauthorized
from core.models import User
from core.web.forms import FormState
from federation.admin import PERMISSION
from federation.admin import _client
from federation.admin import audit_peer
from federation.admin import key_changes
from federation.admin import problem_for
from federation.client import PeerRequestError
from federation.config import federation_settings
from federation.models import FederationPeer
from federation.peers import PeerError
from federation.peers import PeerNotFound
from federation.peers import add_peer
from federation.peers import approve_peer
from federation.peers import find_peer
from federation.peers import list_peers
from federation.peers import refresh_peer
from federation.peers import remove_peer
from federation.peers import suspend_peer
from federation.wellknown import base_url

__all__ = ["MAX_URL", "admin_nav", "bp"]

log = logging.getLogger(__name__)

bp = Blueprint("federation_pages", __name__, url_prefix="/admin/peers", template_folder="templates")

MAX_URL = 500
"""Longest peer URL the form accepts (the column's size)."""


@bp.before_request
def _guard() -> BaseResponse | None:
    """Anonymous visitors log in first; everyone else needs ``federation.peers``."""
    if current_user() is None:
        if "account.login" in current_app.view_functions:
            target = request.full_path if request.method == "GET" else request.path
            return redirect(url_for("account.login", next=target.rstrip("?")))
        raise Unauthorized(gettext("Please log in."))
    rbac.require(require_user(), PERMISSION)
    return None


def when(moment: datetime) -> Markup:
    """A stored (UTC) time as a ``<time>`` element."""
    return Markup('<time datetime="{}">{} UTC</time>').format(
        moment.isoformat(), moment.strftime("%Y-%m-%d %H:%M")
    )


def breakable(text: str) -> Markup:
    """``text`` (a URL or key id) with a line-break opportunity after each slash."""
    return Markup("/<wbr>").join(escape(part) for part in text.split("/"))


@bp.context_processor
def _helpers() -> dict[str, Any]:
    return {"when": when, "breakable": breakable, "state_label": state_label}


def _settings() -> Settings:
    settings: Settings = current_app.extensions["trivium.settings"]
    return settings


def _find(peer_id: str) -> FederationPeer:
    """The peer, or a 404 page."""
    try:
        return find_peer(db.session(), peer_id[:100])
    except PeerNotFound as exc:
        raise problem_for(exc) from None


def _back(peer: FederationPeer | None = None) -> BaseResponse:
    anchor = f"peer-{peer.public_id}" if peer is not None else None
    return redirect(url_for("federation_pages.index", _anchor=anchor), code=303)


def _render(form: FormState | None = None, status: int = 200) -> ResponseReturnValue:
    return (
        render_template(
            "federation/peers.html",
            peers=list_peers(db.session()),
            form=form or FormState(values={"url": ""}),
        ),
        status,
    )


def state_label(state: str) -> str:
    """A peer's state for people."""
    labels: dict[str, str] = {
        "pending": gettext("pending"),
        "approved": gettext("approved"),
        "suspended": gettext("suspended"),
    }
    return labels.get(state, state)


# ---------------------------------------------------------------- list and add


@bp.get("")
def index() -> ResponseReturnValue:
    """Every peer, oldest first, and the form to add one."""
    return _render()


@bp.post("")
def add() -> ResponseReturnValue:
    """Fetch and pin a peer by URL; an unusable URL is shown inline and nothing is stored."""
    user = require_user()
    form = FormState.of(request.form, ["url"])
    url = form.get("url")
    if not url:
        form.add("url", gettext("Enter the address of the instance to peer with."))
    elif len(url) > MAX_URL:
        form.add("url", gettext("The address is too long (at most %(n)d characters).", n=MAX_URL))
    if not form.ok:
        return _render(form, 422)
    settings = _settings()
    sess = db.session()
    try:
        with _client() as client:
            peer = add_peer(
                sess,
                client,
                url,
                own_id=base_url(settings),
                allow_http=federation_settings(settings).allow_http_peers,
            )
    except (PeerError, PeerRequestError) as exc:
        sess.rollback()
        problem = problem_for(exc)
        log.info("federation=pages action=add_refused url=%r status=%d", url, problem.status)
        form.add("url", _refusal(problem.status, problem.detail))
        return _render(form, 422 if problem.status < 500 else problem.status)
    audit_peer(user, "add", peer, {"keys": [k.kid for k in peer.keys]})
    sess.commit()
    flash(
        gettext(
            "%(name)s was added and is pending: approve it to accept its requests.",
            name=peer.name,
        ),
        "success",
    )
    return _back(peer)


def _refusal(status: int, detail: str) -> str:
    """Why a peer could not be added or refreshed, for the operator."""
    message: str
    if status == 504:
        message = gettext("The instance did not answer in time (%(detail)s).", detail=detail)
    elif status == 502:
        message = gettext(
            "The instance could not be reached, or sent a document or keys that cannot be "
            "used (%(detail)s).",
            detail=detail,
        )
    elif status == 409:
        message = gettext("This instance is a peer already (%(detail)s).", detail=detail)
    else:
        message = gettext("This address cannot be used (%(detail)s).", detail=detail)
    return message


# ---------------------------------------------------------------- one peer


@bp.post("/<peer_id>/approve")
def approve(peer_id: str) -> ResponseReturnValue:
    """Accept the peer's signed requests."""
    user = require_user()
    peer = _find(peer_id)
    before = peer.state
    approve_peer(peer)
    audit_peer(user, "approve", peer, {"from": before})
    db.session().commit()
    flash(gettext("%(name)s is approved.", name=peer.name), "success")
    return _back(peer)


@bp.post("/<peer_id>/suspend")
def suspend(peer_id: str) -> ResponseReturnValue:
    """Refuse the peer's signed requests until it is approved again."""
    user = require_user()
    peer = _find(peer_id)
    before = peer.state
    suspend_peer(peer)
    audit_peer(user, "suspend", peer, {"from": before})
    db.session().commit()
    flash(gettext("%(name)s is suspended.", name=peer.name), "success")
    return _back(peer)


@bp.post("/<peer_id>/refresh")
def refresh(peer_id: str) -> ResponseReturnValue:
    """Fetch the peer's document and keys again; on failure nothing changes."""
    user = require_user()
    peer = _find(peer_id)
    sess = db.session()
    try:
        with _client() as client:
            changes = refresh_peer(sess, client, peer)
    except (PeerError, PeerRequestError) as exc:
        sess.rollback()
        problem = problem_for(exc)
        log.info("federation=pages action=refresh_refused peer=%s", peer_id[:100])
        flash(_refusal(problem.status, problem.detail), "error")
        return _back(_find(peer_id))
    audit_peer(user, "refresh", peer, key_changes(changes))
    sess.commit()
    flash(
        gettext(
            "Keys of %(name)s refreshed: %(added)d pinned, %(removed)d unpinned.",
            name=peer.name,
            added=len(changes.added),
            removed=len(changes.removed),
        ),
        "success",
    )
    return _back(peer)


@bp.route("/<peer_id>/remove", methods=["GET", "POST"])
def remove(peer_id: str) -> ResponseReturnValue:
    """Ask, then forget the peer, its keys, what it sent and its catalog entries."""
    user = require_user()
    peer = _find(peer_id)
    if request.method == "GET":
        return render_template("federation/remove.html", peer=peer)
    sess = db.session()
    name = peer.name
    audit_peer(user, "remove", peer)
    remove_peer(sess, peer)
    sess.commit()
    flash(gettext("%(name)s was removed.", name=name), "success")
    return _back()


# ---------------------------------------------------------------- admin tabs


def admin_nav(context: dict[str, Any]) -> Markup | None:
    """The "Peers" tab of the administration pages, for those who may manage peers."""
    user = context.get("user")
    if not isinstance(user, User) or not rbac.can(user, PERMISSION):
        return None
    current = (request.endpoint or "").startswith(f"{bp.name}.")
    return Markup('<li><a href="{}"{}>{}</a></li>').format(
        url_for("federation_pages.index"),
        Markup(' aria-current="page"') if current else "",
        gettext("Peers"),
    )
