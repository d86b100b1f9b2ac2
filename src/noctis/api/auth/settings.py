"""Settings of the login side, read from the environment (``NOCTIS_`` prefix) by install()."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from noctis.core.roles import Role


class AuthSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NOCTIS_", extra="ignore")

    admin_password: SecretStr | None = Field(
        default=None,
        description="password of the first administrator (random and printed if unset)",
    )
    cookie_name: str = "noctis_session"
    cookie_secure: Literal["auto", "always", "never"] = Field(
        default="auto",
        description="auto: Secure when the request came over https (behind a proxy, list "
        "it in NOCTIS_TRUSTED_PROXIES so its X-Forwarded-Proto counts)",
    )
    session_lifetime_seconds: int = Field(default=12 * 3600, ge=60)
    session_idle_seconds: int = Field(default=2 * 3600, ge=60)
    login_max_failures: int = Field(
        default=5, ge=1, description="password attempts per user name and client address..."
    )
    login_lockout_seconds: int = Field(
        default=300,
        ge=0,
        description="...within this window, started by the first attempt (0: no lockout)",
    )
    login_rate_burst: int = Field(
        default=10, ge=1, description="login attempts one client address may make at once..."
    )
    login_rate_per_minute: float = Field(
        default=20.0, gt=0, description="...and how fast its allowance refills"
    )
    login_hash_concurrency: int = Field(
        default=2, ge=1, description="password hashes computed at once by one API process"
    )
    login_hash_queue: int = Field(
        default=16, ge=0, description="logins that may wait for a hashing slot (then 503)"
    )

    # OpenID Connect (enabled when issuer and client id are set)
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret: SecretStr | None = None
    oidc_audience: str | None = Field(
        default=None, description="expected `aud` of bearer JWTs (default: the client id)"
    )
    oidc_scopes: str = "openid profile email"
    oidc_groups_claim: str = "groups"
    oidc_username_claim: str = "preferred_username"
    oidc_role_groups: dict[Role, list[str]] = Field(
        default_factory=dict,
        description='identity-provider groups per role, JSON: {"admin": ["pacs-admins"]}',
    )
    oidc_default_role: Role | None = Field(
        default=None, description="role of a user in no role group (unset: such users are refused)"
    )
    oidc_provider_name: str = "single sign-on"
    oidc_redirect_url: str | None = Field(
        default=None, description="the callback URL registered at the provider (default: derived)"
    )
    oidc_leeway_seconds: int = 30

    @property
    def oidc_enabled(self) -> bool:
        return bool(self.oidc_issuer and self.oidc_client_id)
