"""The instance's key set: Ed25519 keys for HTTP signatures, an RSA key for RS256 JWTs.

Keys live under ``<instance>/keys/`` (mode 0700):

- ``index.json`` lists every key: its id, algorithm, creation time and status
  (``active`` signs; ``retired`` only verifies what was signed before);
- ``<key id>.pem`` holds each private key (PKCS #8, mode 0600).

A key's id is its RFC 7638 JWK thumbprint, so an id always names the same key
material.  Its ``kid`` is the absolute URL ``<base_url>/federation/keys/<id>``,
which serves that public key as a JWK: anyone holding a ``kid`` (a peer, or an
Open Badges verifier) can resolve it.  Rotation adds a new active key and
retires the old one; retired keys stay in the JWKS for verification.

Only ``trivium init`` (and the demo, through it) and the explicit
``python -m federation keys generate`` make a key set.  An instance whose
``keys/`` is missing or broken refuses to start (:class:`KeysUnusable`) rather
than make new keys: new keys are a new identity, which peers have not pinned,
and a machine of a scaled-out instance whose ``keys/`` was not copied would
sign with keys its peers refuse.

Writes take an exclusive lock on ``keys/.lock`` so that ``trivium keys rotate``,
``trivium init`` and ``keys generate`` never interleave.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import shlex
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from pathlib import Path
from typing import Any
from typing import Literal

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from joserfc.jwk import OKPKey
from joserfc.jwk import RSAKey
from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import ValidationError

from core.plugins import StartupError
from federation.signatures import Peer
from federation.signatures import PinnedKey

__all__ = [
    "ALGORITHMS",
    "InsecureKeyFile",
    "InstanceKey",
    "KeyIndexInvalid",
    "KeyNotFound",
    "KeyRecord",
    "KeySet",
    "KeysExist",
    "KeysMissing",
    "KeysUnusable",
    "OwnTrust",
    "ensure_keys",
    "generate_command",
    "generate_keys",
    "key_id_from_url",
    "key_url",
    "keys_dir",
    "load_keys",
    "rotate_key",
    "usable_keys",
]

log = logging.getLogger(__name__)

Algorithm = Literal["Ed25519", "RS256"]
ALGORITHMS: tuple[Algorithm, ...] = ("Ed25519", "RS256")
"""JOSE names (RFC 9864, RFC 7518): Ed25519 signs HTTP messages, RS256 JWTs."""

RSA_BITS = 3072
KEYS_DIR = "keys"
INDEX_FILE = "index.json"
KEY_PATH = "/federation/keys/"


class KeysMissing(Exception):
    """The instance has no key index (``trivium init`` makes one)."""


class KeyIndexInvalid(Exception):
    """``keys/index.json`` is unreadable, invalid, or names a key file that is missing."""


class InsecureKeyFile(Exception):
    """A private key file is readable by others than its owner; fix with ``chmod 600``."""


class KeyNotFound(LookupError):
    """No key of the instance has this id."""


class KeysUnusable(StartupError):
    """The instance's ``keys/`` is missing, incomplete or unreadable: it does not start.

    The message names the folder and what to do: copy ``keys/`` from another
    machine of the instance (or a backup), fix a file's mode, or, only for a
    new identity, generate a key set explicitly.
    """


class KeysExist(Exception):
    """``keys generate`` refused: the instance already holds keys (or some of them)."""


class KeyRecord(BaseModel):
    """One key as listed in ``index.json``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    alg: Algorithm
    created: datetime
    status: Literal["active", "retired"]
    retired: datetime | None = None


class _Index(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    keys: list[KeyRecord] = []


PrivateKey = Ed25519PrivateKey | RSAPrivateKey


@dataclass(frozen=True)
class InstanceKey:
    """A key of this instance: its index record and private key."""

    record: KeyRecord
    private_key: PrivateKey

    @property
    def id(self) -> str:
        """The RFC 7638 thumbprint naming this key."""
        return self.record.id

    def public_jwk(self, base_url: str) -> dict[str, Any]:
        """The public key as a JWK, with its resolvable ``kid`` URL.

        Built from the public half only, so no private member can slip in.
        """
        jwk = _jwk(self.private_key.public_key())
        return {
            **jwk.as_dict(private=False),
            "kid": key_url(base_url, self.id),
            "use": "sig",
            "alg": self.record.alg,
        }


@dataclass(frozen=True)
class KeySet:
    """Every key of an instance, as loaded from its ``keys/`` folder."""

    keys: tuple[InstanceKey, ...]
    """In index order: oldest first."""

    def active(self, alg: Algorithm) -> InstanceKey:
        """The newest active key of ``alg`` (the one to sign with).

        :raise KeyNotFound: no active key of that algorithm.
        """
        for key in reversed(self.keys):
            if key.record.alg == alg and key.record.status == "active":
                return key
        raise KeyNotFound(f"no active {alg} key")

    def signing_key(self) -> Ed25519PrivateKey:
        """The active Ed25519 private key, for HTTP message signatures."""
        key = self.active("Ed25519").private_key
        assert isinstance(key, Ed25519PrivateKey)
        return key

    def get(self, key_id: str) -> InstanceKey:
        """The key called ``key_id``, active or retired.

        :raise KeyNotFound: no such key.
        """
        for key in self.keys:
            if key.id == key_id:
                return key
        raise KeyNotFound(key_id)

    def verification_key(self, key_id: str) -> Ed25519PublicKey:
        """The public half of Ed25519 key ``key_id`` (retired keys included).

        :raise KeyNotFound: no Ed25519 key of that id.
        """
        key = self.get(key_id).private_key
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyNotFound(f"{key_id} is not an Ed25519 key")
        return key.public_key()

    def jwks(self, base_url: str) -> dict[str, Any]:
        """The JWK Set of every public key, newest first; never private material."""
        return {"keys": [key.public_jwk(base_url) for key in reversed(self.keys)]}


@dataclass(frozen=True)
class OwnTrust:
    """A :class:`~federation.signatures.TrustStore` of this instance's own keys.

    Verifies what this instance signed, with active and retired keys alike:
    loopback checks, tests, and a peer's view of us once it pinned our JWKS.
    """

    base_url: str
    keys: KeySet

    def peer_for_keyid(self, keyid: str) -> Peer | None:
        """This instance, when ``keyid`` is one of its kid URLs."""
        if key_id_from_url(self.base_url, keyid) is None:
            return None
        return Peer(self.base_url.rstrip("/"))

    def pinned_key(self, keyid: str) -> PinnedKey | None:
        """The Ed25519 key behind ``keyid``, or None."""
        key_id = key_id_from_url(self.base_url, keyid)
        if key_id is None:
            return None
        try:
            public_key = self.keys.verification_key(key_id)
        except KeyNotFound:
            return None
        return PinnedKey(keyid, self.base_url.rstrip("/"), public_key)


# ---------------------------------------------------------------- kid URLs


def key_url(base_url: str, key_id: str) -> str:
    """The ``kid`` of key ``key_id``: ``<base_url>/federation/keys/<key_id>``."""
    return base_url.rstrip("/") + KEY_PATH + key_id


def key_id_from_url(base_url: str, kid: str) -> str | None:
    """The key id of one of our ``kid`` URLs, or None if ``kid`` is not ours."""
    prefix = base_url.rstrip("/") + KEY_PATH
    if not kid.startswith(prefix):
        return None
    key_id = kid[len(prefix) :]
    return key_id if key_id and "/" not in key_id else None


# ---------------------------------------------------------------- files


def keys_dir(instance_path: str | os.PathLike[str]) -> Path:
    """The instance's ``keys/`` folder."""
    return Path(instance_path) / KEYS_DIR


def _jwk(public_key: Ed25519PublicKey | rsa.RSAPublicKey) -> OKPKey | RSAKey:
    if isinstance(public_key, Ed25519PublicKey):
        return OKPKey.import_key(public_key)
    return RSAKey.import_key(public_key)


def _thumbprint(private_key: PrivateKey) -> str:
    return _jwk(private_key.public_key()).thumbprint()


def _write_private(path: Path, data: bytes) -> None:
    # O_EXCL: a key file is written once and never overwritten.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(path, 0o600)


def _write_index(folder: Path, index: _Index) -> None:
    tmp = folder / f".{INDEX_FILE}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(index.model_dump_json(indent=2) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, folder / INDEX_FILE)


def _read_index(folder: Path) -> _Index:
    path = folder / INDEX_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise KeysMissing(f"{path} does not exist") from None
    except OSError as exc:
        raise KeyIndexInvalid(f"{path}: {exc}") from exc
    try:
        return _Index.model_validate_json(raw)
    except ValidationError as exc:
        raise KeyIndexInvalid(f"{path}: {exc}") from exc


def _read_private(folder: Path, record: KeyRecord) -> PrivateKey:
    path = folder / f"{record.id}.pem"
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except FileNotFoundError:
        raise KeyIndexInvalid(f"{path}, listed in {INDEX_FILE}, is missing") from None
    except OSError as exc:
        raise KeyIndexInvalid(f"{path}: {exc}") from exc
    if stat.S_IMODE(mode) & 0o077:
        raise InsecureKeyFile(f"{path} is mode {stat.S_IMODE(mode):o}; run: chmod 600 {path}")
    try:
        key = _parse_pem(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyIndexInvalid(f"{path} is not a readable private key: {exc}") from exc
    expected = Ed25519PrivateKey if record.alg == "Ed25519" else RSAPrivateKey
    if not isinstance(key, expected) or _thumbprint(key) != record.id:
        raise KeyIndexInvalid(f"{path} does not hold the {record.alg} key {record.id}")
    return key


@functools.lru_cache(maxsize=64)
def _parse_pem(data: bytes) -> PrivateKeyTypes:
    # Loading an RSA key checks its consistency, about 0.1 s for 3072 bits.
    # Every app of a process reads the same files, and a rotation makes each
    # process read the whole set again: parse each file's content once.
    return serialization.load_pem_private_key(data, password=None)


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    fd = os.open(folder / ".lock", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _generate(alg: Algorithm) -> PrivateKey:
    if alg == "Ed25519":
        return Ed25519PrivateKey.generate()
    return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)


def _add_key(folder: Path, index: _Index, alg: Algorithm, now: datetime) -> KeyRecord:
    """Write a new active key of ``alg``, retire the previous active ones, save the index."""
    private_key = _generate(alg)
    record = KeyRecord(id=_thumbprint(private_key), alg=alg, created=now, status="active")
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_private(folder / f"{record.id}.pem", pem)
    index.keys = [
        k.model_copy(update={"status": "retired", "retired": now})
        if k.alg == alg and k.status == "active"
        else k
        for k in index.keys
    ]
    index.keys.append(record)
    _write_index(folder, index)
    return record


def _now() -> datetime:
    return datetime.now(UTC)


def load_keys(instance_path: str | os.PathLike[str]) -> KeySet:
    """Read the instance's key set.

    :raise KeysMissing: there is no ``keys/index.json``.
    :raise KeyIndexInvalid: the index or a key file is broken.
    :raise InsecureKeyFile: a private key file is readable by group or others.
    """
    folder = keys_dir(instance_path)
    index = _read_index(folder)
    return KeySet(tuple(InstanceKey(r, _read_private(folder, r)) for r in index.keys))


def usable_keys(instance_path: str | os.PathLike[str]) -> KeySet:
    """The instance's key set, checked for what it signs with: what start-up reads.

    Reads only; nothing is written to ``keys/`` whatever it finds.

    :raise KeysUnusable: ``keys/`` or its index is missing, a key file is
        missing, broken or readable by others, or an algorithm has no active key.
    """
    folder = keys_dir(instance_path)
    try:
        key_set = load_keys(instance_path)
        for alg in ALGORITHMS:
            key_set.active(alg)
    except KeysMissing:
        if any(folder.glob("*.pem")):
            raise KeysUnusable(_broken(folder, f"{folder / INDEX_FILE} is missing")) from None
        raise KeysUnusable(_missing(folder, instance_path)) from None
    except InsecureKeyFile as exc:
        raise KeysUnusable(f"{exc} (a private key others can read is refused)") from exc
    except KeyNotFound as exc:
        raise KeysUnusable(_broken(folder, f"{folder / INDEX_FILE} lists {exc}")) from exc
    except KeyIndexInvalid as exc:
        raise KeysUnusable(_broken(folder, str(exc))) from exc
    return key_set


def _missing(folder: Path, instance_path: str | os.PathLike[str]) -> str:
    return (
        f"{folder} holds no keys, and the instance does not start without them: they are "
        "its identity, the one its peers have pinned and its credentials are signed with. "
        "If the instance runs on other machines, copy their keys/ folder here, or restore "
        "it from a backup, keeping its modes (folder 0700, files 0600). Only if this is a "
        f"new identity that no peer knows yet: {generate_command(instance_path)}"
    )


def _broken(folder: Path, detail: str) -> str:
    return (
        f"{folder} cannot be used: {detail}. Copy keys/ whole from another machine of "
        "this instance, or restore it from a backup (folder 0700, files 0600). New keys "
        "would be a new identity, which the instance's peers do not know."
    )


def generate_command(instance_path: str | os.PathLike[str]) -> str:
    """The command line that generates a new key set for the instance at ``instance_path``."""
    return shlex.join(
        [sys.executable, "-m", "federation", "keys", "generate", "--instance", str(instance_path)]
    )


def generate_keys(instance_path: str | os.PathLike[str]) -> list[KeyRecord]:
    """Make the key set of an instance that has none: a new identity.

    :return: the keys made, Ed25519 then RS256.
    :raise KeysExist: ``keys/`` already holds an index or key files (nothing is changed).
    """
    folder = keys_dir(instance_path)
    _refuse_existing(folder)  # before the lock file is made
    with _locked(folder):
        _refuse_existing(folder)  # another process may have been first
        index = _Index()
        created = [_add_key(folder, index, alg, _now()) for alg in ALGORITHMS]
    for record in created:
        log.info("federation=keys action=generated alg=%s key=%s", record.alg, record.id)
    return created


def _refuse_existing(folder: Path) -> None:
    found = sorted(p.name for p in folder.glob("*") if p.name == INDEX_FILE or p.suffix == ".pem")
    if found:
        raise KeysExist(
            f"{folder} already holds keys ({', '.join(found)}); they are never replaced. "
            "If they are broken, restore keys/ from another machine of this instance or "
            f"from a backup. Only to give the instance a new identity: move {folder} away first."
        )


def ensure_keys(instance_path: str | os.PathLike[str]) -> list[KeyRecord]:
    """Create whatever the key set lacks: an active Ed25519 key, an active RSA key.

    What ``trivium init`` does (``init_instance``), also with ``--force`` on an
    existing folder: an existing key is never replaced.  Never called at
    start-up (see :func:`usable_keys`).

    :return: the keys created (empty when the set was complete).
    :raise KeyIndexInvalid: an index exists but is broken (it is not overwritten).
    """
    folder = keys_dir(instance_path)
    created: list[KeyRecord] = []
    with _locked(folder):
        try:
            index = _read_index(folder)
        except KeysMissing:
            index = _Index()
        for alg in ALGORITHMS:
            if not any(k.alg == alg and k.status == "active" for k in index.keys):
                created.append(_add_key(folder, index, alg, _now()))
    for record in created:
        log.info("federation=keys action=generated alg=%s key=%s", record.alg, record.id)
    return created


def rotate_key(instance_path: str | os.PathLike[str], alg: Algorithm = "Ed25519") -> KeyRecord:
    """Add a new active key of ``alg`` and retire the previous one (kept for verifying).

    :return: the new key's record.
    :raise KeysMissing: the instance has no keys yet.
    :raise KeyIndexInvalid: the index is broken.
    """
    folder = keys_dir(instance_path)
    with _locked(folder):
        index = _read_index(folder)
        record = _add_key(folder, index, alg, _now())
    log.info("federation=keys action=rotated alg=%s key=%s", alg, record.id)
    return record
