"""Federation's settings: the ``[plugins.federation]`` table of ``instance.toml``."""

from __future__ import annotations

from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field
from pydantic import ValidationError

from core.config import Settings
from core.plugins import StartupError
from federation.client import ClientPolicy
from federation.signatures import VerifyPolicy

__all__ = ["FederationConfigError", "FederationSettings", "federation_settings"]


class FederationConfigError(StartupError):
    """``[plugins.federation]`` holds an unknown key or an invalid value.

    Checked by federation's ``startup``: the instance does not start until the
    setting is mended (a wrong signature window or timeout would otherwise
    refuse or accept peers' requests other than the operator meant).
    """


class FederationSettings(BaseModel):
    """What an operator may tune; every value has a safe default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    signature_max_age: int = Field(default=300, ge=30, le=3600)
    """Seconds a signature is accepted after its ``created`` time, and the clock
    skew tolerated for one that claims to come from the future."""
    max_message_bytes: int = Field(default=1024 * 1024, ge=1024)
    """Largest signed body accepted from a peer, in a request or a response."""
    max_document_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    """Largest instance document or JWK Set accepted from a peer."""
    connect_timeout: float = Field(default=5.0, gt=0, le=60)
    """Seconds to wait for a peer to accept a connection."""
    read_timeout: float = Field(default=10.0, gt=0, le=300)
    """Seconds to wait for each read from a peer (headers, each part of the body)."""
    request_deadline: float = Field(default=30.0, gt=0, le=600)
    """Seconds a whole exchange with a peer may take, body included."""
    key_refetch_interval: int = Field(default=60, ge=1, le=86400)
    """Least seconds between two refetches of one peer's JWK Set on an unknown key id."""
    catalog_sync_interval: int = Field(default=900, ge=10, le=7 * 86400)
    """Seconds between two pulls of an approved peer's catalog feed (a signed
    ``catalog.changed`` notification pulls at once)."""
    catalog_page_size: int = Field(default=200, ge=1, le=500)
    """Items asked for per feed page; a page holding more is refused."""
    catalog_max_pages: int = Field(default=50, ge=1, le=10_000)
    """Feed pages read in one sync run; the rest follows in the next run, at once."""
    catalog_max_entry_bytes: int = Field(default=32 * 1024, ge=1024, le=1024 * 1024)
    """Largest serialised feed item accepted; a page holding a larger one is refused."""
    catalog_backoff_max: int = Field(default=6 * 3600, ge=10, le=7 * 86400)
    """Longest wait before retrying a peer whose feed failed (doubling from 30 s)."""
    catalog_tick_seconds: int = Field(default=60, ge=1, le=3600)
    """How often the scheduler looks for peers whose catalog pull is due."""
    allow_http_peers: bool = False
    """Accept ``http://`` peer URLs (a test network); production peers use https."""

    def verify_policy(self) -> VerifyPolicy:
        """The limits a signature verifier enforces."""
        return VerifyPolicy(max_age=self.signature_max_age, max_body_bytes=self.max_message_bytes)

    def client_policy(self) -> ClientPolicy:
        """The timeouts and size caps of requests to peers."""
        return ClientPolicy(
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            deadline=self.request_deadline,
            max_document_bytes=self.max_document_bytes,
            max_response_bytes=self.max_message_bytes,
            verify=self.verify_policy(),
        )


def federation_settings(settings: Settings) -> FederationSettings:
    """Validate ``[plugins.federation]``.

    :raise FederationConfigError: a key is unknown or a value out of range.
    """
    try:
        return FederationSettings.model_validate(settings.plugins.settings_for("federation"))
    except ValidationError as exc:
        raise FederationConfigError(f"[plugins.federation]: {exc}") from exc
