"""OpenID Connect: authorization-code login with PKCE, and bearer JWTs from the same issuer.

Tokens are verified against the issuer's JWKS (signature, `iss`, `aud`, `exp`, `nbf`; the
`nonce` for ID tokens). The groups claim decides the role (`oidc_role_groups`) and the
facilities (each Facility's `idp_groups`); administrators see every facility.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import jwt
from sqlalchemy import select
from sqlalchemy.orm import Session

from noctis.api.auth.settings import AuthSettings
from noctis.api.security import Principal
from noctis.core.roles import Role
from noctis.index.models import Facility

if TYPE_CHECKING:
    import httpx  # imported where OIDC is configured (~4 MB per process otherwise)

SIGNING_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384"]
# Most to least privileged: a user in several role groups gets the first that matches.
ROLE_ORDER = [
    Role.ADMIN,
    Role.FACILITY_ADMIN,
    Role.RADIOLOGIST,
    Role.TECHNOLOGIST,
    Role.REFERRING_PHYSICIAN,
]
METADATA_TTL = 3600.0
JWKS_MIN_REFRESH = 2.0  # an unknown `kid` refetches the JWKS at most this often


class OidcError(Exception):
    """The provider or the token failed a check; the message is safe to show."""


@dataclass(frozen=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    end_session_endpoint: str | None = None


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge) per RFC 7636."""
    verifier = secrets.token_urlsafe(64)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()


def claim_path(claims: dict[str, Any], path: str) -> Any:
    """A claim by dotted path (Keycloak puts roles in `realm_access.roles`)."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def groups_of(claims: dict[str, Any], path: str) -> list[str]:
    value = claim_path(claims, path)
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [str(v) for v in value]
    return []


class OidcProvider:
    def __init__(self, settings: AuthSettings, http: httpx.Client | None = None) -> None:
        if not settings.oidc_issuer or not settings.oidc_client_id:
            raise ValueError("OIDC needs NOCTIS_OIDC_ISSUER and NOCTIS_OIDC_CLIENT_ID")
        self.settings = settings
        self.issuer = settings.oidc_issuer.rstrip("/")
        self.client_id = settings.oidc_client_id
        if http is None:
            import httpx

            http = httpx.Client(timeout=10.0)
        self._http = http
        self._lock = threading.Lock()
        self._metadata: ProviderMetadata | None = None
        self._metadata_at = 0.0
        self._jwks: jwt.PyJWKSet | None = None
        self._jwks_at = 0.0
        self.jwks_min_refresh = JWKS_MIN_REFRESH

    # -- provider documents -------------------------------------------------------------
    def metadata(self) -> ProviderMetadata:
        with self._lock:
            if self._metadata and time.monotonic() - self._metadata_at < METADATA_TTL:
                return self._metadata
        document = self._get_json(f"{self.issuer}/.well-known/openid-configuration")
        if str(document.get("issuer", "")).rstrip("/") != self.issuer:
            raise OidcError("the provider's discovery document names another issuer")
        try:
            metadata = ProviderMetadata(
                issuer=document["issuer"],
                authorization_endpoint=document["authorization_endpoint"],
                token_endpoint=document["token_endpoint"],
                jwks_uri=document["jwks_uri"],
                end_session_endpoint=document.get("end_session_endpoint"),
            )
        except KeyError as exc:
            raise OidcError(f"the provider's discovery document lacks {exc}") from None
        with self._lock:
            self._metadata, self._metadata_at = metadata, time.monotonic()
        return metadata

    def _get_json(self, url: str) -> dict[str, Any]:
        import httpx

        try:
            response = self._http.get(url)
            response.raise_for_status()
            return dict(response.json())
        except (httpx.HTTPError, ValueError) as exc:
            raise OidcError(f"identity provider unreachable ({type(exc).__name__})") from exc

    def _signing_key(self, token: str) -> jwt.PyJWK:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as exc:
            raise OidcError("malformed token") from exc
        for refresh in (False, True):
            keys = self._keys(refresh)
            for key in keys.keys:
                if kid is None or key.key_id == kid:
                    return key
        raise OidcError("token signed with an unknown key")

    def _keys(self, refresh: bool) -> jwt.PyJWKSet:
        with self._lock:
            cached, age = self._jwks, time.monotonic() - self._jwks_at
        if cached is not None and (not refresh or age < self.jwks_min_refresh):
            return cached
        try:
            keys = jwt.PyJWKSet.from_dict(self._get_json(self.metadata().jwks_uri))
        except jwt.PyJWTError as exc:
            raise OidcError("the provider's key set is unusable") from exc
        with self._lock:
            self._jwks, self._jwks_at = keys, time.monotonic()
        return keys

    # -- tokens ---------------------------------------------------------------------------
    def verify(self, token: str, *, audience: str, nonce: str | None = None) -> dict[str, Any]:
        """The claims of a valid token from this issuer for `audience`; OidcError if not."""
        key = self._signing_key(token)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=SIGNING_ALGORITHMS,
                audience=audience,
                issuer=self.metadata().issuer,
                leeway=self.settings.oidc_leeway_seconds,
                options={"require": ["exp", "iss", "sub"]},
            )
        except jwt.PyJWTError as exc:
            raise OidcError(f"token rejected: {exc}") from exc
        if nonce is not None and not secrets.compare_digest(str(claims.get("nonce", "")), nonce):
            raise OidcError("token rejected: nonce mismatch")
        return claims

    def verify_bearer(self, token: str) -> dict[str, Any]:
        return self.verify(token, audience=self.settings.oidc_audience or self.client_id)

    def authorization_url(
        self, *, redirect_uri: str, state: str, nonce: str, challenge: str
    ) -> str:
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.client_id,
                "redirect_uri": redirect_uri,
                "scope": self.settings.oidc_scopes,
                "state": state,
                "nonce": nonce,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
        )
        endpoint = self.metadata().authorization_endpoint
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"

    def exchange_code(self, *, code: str, redirect_uri: str, verifier: str) -> str:
        """The (not yet verified) ID token the provider issues for an authorization code."""
        import httpx

        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
            "client_id": self.client_id,
        }
        secret = self.settings.oidc_client_secret
        try:
            if secret:  # a confidential client: client_secret_basic
                auth = (self.client_id, secret.get_secret_value())
                response = self._http.post(self.metadata().token_endpoint, data=form, auth=auth)
            else:  # a public client: PKCE alone
                response = self._http.post(self.metadata().token_endpoint, data=form)
        except httpx.HTTPError as exc:
            raise OidcError(f"identity provider unreachable ({type(exc).__name__})") from exc
        if response.status_code != 200:
            raise OidcError(f"the identity provider refused the code ({response.status_code})")
        id_token = response.json().get("id_token")
        if not id_token:
            raise OidcError("the identity provider returned no ID token")
        return str(id_token)

    # -- claims -> who and what -----------------------------------------------------------
    def username(self, claims: dict[str, Any]) -> str:
        return str(claim_path(claims, self.settings.oidc_username_claim) or claims["sub"])

    def groups(self, claims: dict[str, Any]) -> list[str]:
        return groups_of(claims, self.settings.oidc_groups_claim)

    def role_for(self, groups: list[str]) -> Role | None:
        member = set(groups)
        for role in ROLE_ORDER:
            if member & set(self.settings.oidc_role_groups.get(role, [])):
                return role
        return self.settings.oidc_default_role

    def facilities_for(self, session: Session, groups: list[str]) -> frozenset[int]:
        member = set(groups)
        rows = session.execute(
            select(Facility.id, Facility.idp_groups).where(Facility.enabled.is_(True))
        ).all()
        return frozenset(fid for fid, idp_groups in rows if member & set(idp_groups or []))

    def principal_for_claims(self, session: Session, claims: dict[str, Any]) -> Principal | None:
        """Who a bearer JWT speaks for, or None if its groups map to no role."""
        groups = self.groups(claims)
        role = self.role_for(groups)
        if role is None:
            return None
        facilities = None if role is Role.ADMIN else self.facilities_for(session, groups)
        return Principal(self.username(claims), role, facilities, method="oidc")
