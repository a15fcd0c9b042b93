"""Federation's settings: the ``[plugins.federation]`` table of ``instance.toml``."""

from __future__ import annotations

from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field
from pydantic import ValidationError

from core.config import Settings
from federation.signatures import VerifyPolicy

__all__ = ["FederationConfigError", "FederationSettings", "federation_settings"]


class FederationConfigError(Exception):
    """``[plugins.federation]`` holds an unknown key or an invalid value."""


class FederationSettings(BaseModel):
    """What an operator may tune; every value has a safe default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    signature_max_age: int = Field(default=300, ge=30, le=3600)
    """Seconds a signature is accepted after its ``created`` time, and the clock
    skew tolerated for one that claims to come from the future."""
    max_message_bytes: int = Field(default=1024 * 1024, ge=1024)
    """Largest signed body accepted from a peer."""

    def verify_policy(self) -> VerifyPolicy:
        """The limits a signature verifier enforces."""
        return VerifyPolicy(max_age=self.signature_max_age, max_body_bytes=self.max_message_bytes)


def federation_settings(settings: Settings) -> FederationSettings:
    """Validate ``[plugins.federation]``.

    :raise FederationConfigError: a key is unknown or a value out of range.
    """
    try:
        return FederationSettings.model_validate(settings.plugins.settings_for("federation"))
    except ValidationError as exc:
        raise FederationConfigError(f"[plugins.federation]: {exc}") from exc
