"""The instance's public identity: ``/.well-known/trivium``, its JWKS, and each key's ``kid`` URL.

These documents are how a peer first learns about us, so they are public,
unsigned and cacheable: each response carries a strong ETag and answers a
matching ``If-None-Match`` with 304.  Trust comes from pinning: an operator
approves a peering, and the keys fetched then are the ones accepted after.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from flask import Blueprint
from flask import Flask
from flask import Response
from flask import current_app
from flask import request

from core.config import Settings
from core.errors import NotFound
from federation.config import federation_settings
from federation.keys import INDEX_FILE
from federation.keys import KeyNotFound
from federation.keys import KeySet
from federation.keys import KeysUnusable
from federation.keys import key_url
from federation.keys import keys_dir
from federation.keys import usable_keys
from federation.signatures import ALGORITHM
from federation.signatures import DIGEST_ALGORITHM
from federation.signatures import LABEL
from federation.signatures import TAG

bp = Blueprint("federation_wellknown", __name__)

__all__ = [
    "CATALOG_PATH",
    "INBOX_PATH",
    "INSTANCE_PATH",
    "JWKS_PATH",
    "PROTOCOL_VERSION",
    "base_url",
    "bp",
    "current_keys",
    "instance_document",
]

log = logging.getLogger(__name__)

PROTOCOL_VERSION = "1"
INSTANCE_PATH = "/.well-known/trivium"
JWKS_PATH = "/.well-known/jwks.json"
INBOX_PATH = "/federation/v1/inbox"
CATALOG_PATH = "/federation/v1/catalog"
MAX_AGE = 300
_CACHE_KEY = "federation.keys"


def base_url(settings: Settings) -> str:
    """The instance's id: its configured base URL without a trailing slash."""
    return settings.instance.base_url.rstrip("/")


def instance_document(settings: Settings) -> dict[str, Any]:
    """The ``/.well-known/trivium`` document (fields in docs/federation.md)."""
    base = base_url(settings)
    policy = federation_settings(settings)
    return {
        "id": base,
        "type": "TriviumInstance",
        "name": settings.instance.name,
        "protocol_version": PROTOCOL_VERSION,
        "jwks_uri": base + JWKS_PATH,
        "endpoints": {
            "instance": base + INSTANCE_PATH,
            "jwks": base + JWKS_PATH,
            "key": key_url(base, "{key_id}"),
            "inbox": base + INBOX_PATH,
            "catalog": base + CATALOG_PATH,
        },
        "http_signatures": {
            "label": LABEL,
            "tag": TAG,
            "algorithms": [ALGORITHM],
            "digest_algorithms": [DIGEST_ALGORITHM],
            "max_age": policy.signature_max_age,
        },
    }


@dataclass(frozen=True)
class _Loaded:
    stamp: tuple[int, int, int] | None
    keys: KeySet


def _index_stamp(settings: Settings) -> tuple[int, int, int]:
    info = (keys_dir(settings.path) / INDEX_FILE).stat()
    return (info.st_mtime_ns, info.st_size, info.st_ino)


def _load(settings: Settings) -> _Loaded:
    try:
        stamp: tuple[int, int, int] | None = _index_stamp(settings)
    except OSError:
        stamp = None  # usable_keys says what is wrong
    return _Loaded(stamp, usable_keys(settings.path))


def current_keys(app: Flask) -> KeySet:
    """The instance's keys, re-read only when ``keys/index.json`` changed.

    Start-up reads them first (federation's ``startup`` hook).  ``trivium keys
    rotate`` in another process is picked up by the next request.  Keys are
    never made here: if ``keys/`` breaks under a running instance, it keeps
    the keys it has read, and logs why.

    :raise KeysUnusable: on the first call (start-up), ``keys/`` is missing or broken.
    """
    settings: Settings = app.extensions["trivium.settings"]
    loaded: _Loaded | None = app.extensions.get(_CACHE_KEY)
    if loaded is None:
        loaded = app.extensions[_CACHE_KEY] = _load(settings)
        return loaded.keys
    try:
        if _index_stamp(settings) != loaded.stamp:
            loaded = app.extensions[_CACHE_KEY] = _load(settings)
    except (OSError, KeysUnusable) as exc:
        log.error("federation=keys status=unusable action=kept_loaded_keys error=%s", exc)
    return loaded.keys


def _json(document: dict[str, Any], *, max_age: int = MAX_AGE) -> Response:
    body = json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
    response = Response(body, mimetype="application/json")
    response.set_etag(hashlib.sha256(body).hexdigest()[:32])
    response.cache_control.public = True
    response.cache_control.max_age = max_age
    # Public documents any verifier may fetch, from a browser too.
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.make_conditional(request)  # 304 for a matching If-None-Match
    return response


def _settings() -> Settings:
    settings: Settings = current_app.extensions["trivium.settings"]
    return settings


@bp.get(INSTANCE_PATH)
def instance() -> Response:
    """The instance document."""
    return _json(instance_document(_settings()))


@bp.get(JWKS_PATH)
def jwks() -> Response:
    """Every public key, active and retired."""
    return _json(current_keys(current_app).jwks(base_url(_settings())))


@bp.get("/federation/keys/<key_id>")
def key(key_id: str) -> Response:
    """One public key as a JWK: what a ``kid`` URL resolves to."""
    try:
        found = current_keys(current_app).get(key_id)
    except KeyNotFound:
        raise NotFound("no such key") from None
    # A key's content never changes under its id (the id is its thumbprint).
    return _json(found.public_jwk(base_url(_settings())), max_age=86400)
