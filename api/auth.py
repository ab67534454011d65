"""Who is asking: roles, API keys, short-lived signed sessions and the public rate limit.

Three roles:

``public``
    No credential.  Sees aggregated, k-anonymised data only; rate-limited per client IP.
``opd``
    An API key scoped to one OPD (agency) code from the catalog; sees that OPD's reports.
``admin``
    An API key that sees everything.

Keys are created, listed and revoked with ``petalapor keys ...``.  A key is shown once:
``plk_<id>_<secret>`` where ``id`` is 12 hex digits (the row's primary key, safe to log)
and ``secret`` 32 random bytes (base64url).  Only the SHA-256 of the whole token is
stored, and it is compared in constant time.  Clients send the key as ``X-API-Key`` or
``Authorization: Bearer``.

The OPD page exchanges a key for a signed session token (HMAC-SHA256 with the secret
from :class:`AuthSettings`, ``pls.<payload>.<signature>``), kept in an HttpOnly cookie
for ``session_minutes``; the key's row is still checked on every request, so revoking a
key ends its sessions too.

Writes always need a key: filing a report (``POST /reports``, Open311 ``POST
requests``; an intake app such as JAKI or Qlue gets an admin key, or an OPD key when
it only files for that OPD) and changing a report's status.  An OPD key writes only
for its own OPD (:meth:`Viewer.check_acts_for`).  Hidden reports (``public = false``)
are seen by admin keys, and by the key of the OPD they are routed to
(:attr:`Viewer.private_opd`); the public never sees them.  The session cookie only
authorises reads, so a cross-site form cannot write with it.

Routes ask for the caller with ``Depends(viewer)`` (or :func:`require_opd`,
:func:`require_admin`) and get a :class:`Viewer`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

import psycopg
from fastapi import APIRouter, Depends, FastAPI, Request
from psycopg.rows import dict_row
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from starlette.types import ASGIApp, Receive, Scope, Send

from petalapor.errors import (
    AuthenticationError,
    ConfigError,
    InvalidParameterError,
    NotFoundError,
    PermissionDeniedError,
)
from petalapor.secretfile import read_or_create

Role = Literal["public", "opd", "admin"]
KEY_ROLES: tuple[str, ...] = ("opd", "admin")
KEY_PREFIX = "plk_"
SESSION_PREFIX = "pls."
_KEY_RE = re.compile(r"^plk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


class AuthSettings(BaseSettings):
    """Keys, sessions and the public rate limit (prefix ``PETALAPOR_AUTH_``)."""

    model_config = SettingsConfigDict(env_prefix="PETALAPOR_AUTH_", env_file=".env", extra="ignore")

    secret: SecretStr | None = Field(
        None,
        description="HMAC secret for session tokens; default: generated once into var/auth_secret.",
    )
    secret_file: Path | None = Field(
        None, description="Where the generated secret is kept (default var/auth_secret)."
    )
    session_minutes: int = Field(
        60, ge=1, le=24 * 60, description="Lifetime of an OPD page session."
    )
    cookie_name: str = Field("petalapor_session", pattern=r"^[A-Za-z0-9_]+$")
    cookie_secure: bool = Field(
        False, description="Mark the session cookie Secure (set behind HTTPS)."
    )
    rate_per_second: float = Field(
        30.0, gt=0, description="Public requests per second per client IP, sustained."
    )
    rate_burst: int = Field(
        600, ge=1, description="Public requests a client IP may make at once (a map load)."
    )
    rate_max_clients: int = Field(
        50_000, ge=1, description="Buckets kept in memory; the oldest are dropped."
    )
    rate_exempt_prefixes: Annotated[list[str], NoDecode] = Field(
        ["/static/", "/healthz"], description="Paths never rate-limited."
    )
    rate_exempt_clients: Annotated[list[str], NoDecode] = Field(
        ["127.0.0.1", "::1", "testclient"],
        description="Client addresses never limited (the machine itself, test clients). "
        "Behind a reverse "
        "proxy on the same machine set trust_forwarded_for, or every client would count as local.",
    )
    trust_forwarded_for: bool = Field(
        False, description="Take the client IP from X-Forwarded-For (behind a proxy)."
    )

    @field_validator("rate_exempt_prefixes", "rate_exempt_clients", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str) and not value.lstrip().startswith("["):
            return [p.strip() for p in value.split(",") if p.strip()]
        return value


# --------------------------------------------------------------------------- viewer


@dataclass(frozen=True)
class Viewer:
    """The caller of a request: its role, its OPD (for ``opd``) and its key id."""

    role: Role = "public"
    opd: str | None = None
    key_id: str | None = None

    @property
    def is_public(self) -> bool:
        """True without a (valid) key."""
        return self.role == "public"

    @property
    def is_admin(self) -> bool:
        """True for an admin key."""
        return self.role == "admin"

    @property
    def can_see_private(self) -> bool:
        """May see every hidden report (``public = false``): admin keys only.

        An OPD key sees the hidden reports of its own OPD (:attr:`private_opd`).
        """
        return self.is_admin

    @property
    def private_opd(self) -> str | None:
        """The OPD whose hidden reports this caller sees as well (OPD keys), else None."""
        return self.opd if self.role == "opd" else None

    def can_read_opd(self, opd: str | None) -> bool:
        """May this caller see individual reports of ``opd`` (None: of every OPD)?"""
        if self.is_admin:
            return True
        return self.role == "opd" and opd is not None and opd == self.opd

    def can_see_report(self, opd: str, public: bool) -> bool:
        """May this caller see a report of ``opd`` (hidden unless ``public``)?"""
        return public or self.can_read_opd(opd)

    def require_key(self) -> Viewer:
        """This viewer when it holds a key; AuthenticationError (401) for the public."""
        if self.is_public:
            raise AuthenticationError("an OPD or admin API key is required (X-API-Key)")
        return self

    def check_acts_for(self, opd: str) -> None:
        """Refuse a write for ``opd`` unless it is this OPD key's own (admin: any OPD).

        Raises :class:`AuthenticationError` without a key and
        :class:`PermissionDeniedError` for another OPD.
        """
        self.require_key()
        if not self.can_read_opd(opd):
            raise PermissionDeniedError(
                f"this key is scoped to OPD {self.opd}; it cannot act for {opd}"
            )

    def scope_opd(self, requested: str | None) -> str | None:
        """The OPD filter a non-public query must use: the key's own OPD for ``opd`` keys.

        Raises :class:`PermissionDeniedError` when an OPD key asks for another OPD.
        """
        if self.role == "opd":
            if requested not in (None, "", self.opd):
                raise PermissionDeniedError(
                    f"this key is scoped to OPD {self.opd}; it cannot read {requested}"
                )
            return self.opd
        return requested or None


PUBLIC = Viewer()


# --------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class ApiKey:
    """One stored key (never its secret)."""

    id: str
    role: str
    opd: str | None
    name: str | None
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None

    @property
    def active(self) -> bool:
        """Not revoked."""
        return self.revoked_at is None


_KEY_COLUMNS = "id, role, opd, name, created_at, revoked_at, last_used_at"


def hash_token(token: str) -> str:
    """Hex SHA-256 of a token: what is stored and compared."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_key(
    conn: psycopg.Connection, role: str, opd: str | None = None, name: str | None = None
) -> tuple[ApiKey, str]:
    """Create a key; returns the stored row and the token (shown once, never stored).

    Parameters
    ----------
    conn
        Connection to a migrated database.
    role
        ``opd`` or ``admin``.
    opd
        OPD code from the catalog; required for ``opd``, refused for ``admin``.
    name
        Free label (who holds the key).

    Examples
    --------
    >>> key, token = create_key(conn, "opd", "DSDA", name="pintu air")  # doctest: +SKIP
    """
    from petalapor.catalog import get_catalog, sync_catalog

    if role not in KEY_ROLES:
        raise InvalidParameterError(f"role must be one of {', '.join(KEY_ROLES)} (got {role!r})")
    if role == "opd":
        if not opd:
            raise InvalidParameterError("an opd key needs --opd CODE")
        opd = get_catalog().check_opd(opd.upper())
        sync_catalog(conn)  # the api_keys.opd foreign key needs the OPD row
    elif opd:
        raise InvalidParameterError(f"an {role} key is not scoped to an OPD (got --opd {opd})")
    key_id = secrets.token_hex(6)
    token = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            f"INSERT INTO api_keys (id, role, opd, name, token_sha256) VALUES (%s, %s, %s, %s, %s) "
            f"RETURNING {_KEY_COLUMNS}",
            (key_id, role, opd, name, hash_token(token)),
        ).fetchone()
    return ApiKey(**row), token


def revoke_key(conn: psycopg.Connection, key_id: str) -> ApiKey:
    """Revoke a key by id (idempotent: the first revocation time is kept)."""
    key_id = key_id.removeprefix(KEY_PREFIX).split("_")[0]
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) "
            f"WHERE id = %s RETURNING {_KEY_COLUMNS}",
            (key_id,),
        ).fetchone()
    if row is None:
        raise NotFoundError(f"no API key with id {key_id!r}")
    return ApiKey(**row)


def list_keys(conn: psycopg.Connection, include_revoked: bool = True) -> list[ApiKey]:
    """Every key, oldest first."""
    where = "" if include_revoked else "WHERE revoked_at IS NULL"
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            f"SELECT {_KEY_COLUMNS} FROM api_keys {where} ORDER BY created_at, id"
        ).fetchall()  # noqa: S608
    return [ApiKey(**r) for r in rows]


def verify_key(conn: psycopg.Connection, token: str) -> Viewer:
    """The viewer a key stands for; AuthenticationError when unknown, malformed or revoked."""
    match = _KEY_RE.match(token)
    if not match:
        raise AuthenticationError("malformed API key")
    row = _active_key(conn, match[1])
    # compare even when the row is missing so timing says nothing about which ids exist
    stored = row["token_sha256"] if row else "0" * 64
    if not hmac.compare_digest(stored, hash_token(token)) or row is None:
        raise AuthenticationError("unknown or revoked API key")
    _touch(conn, row)
    return Viewer(role=row["role"], opd=row["opd"], key_id=row["id"])


def _active_key(conn: psycopg.Connection, key_id: str) -> dict | None:
    """The key's row when it exists and is not revoked."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT id, role, opd, token_sha256, last_used_at FROM api_keys "
            "WHERE id = %s AND revoked_at IS NULL",
            (key_id,),
        ).fetchone()


def _touch(conn: psycopg.Connection, row: dict) -> None:
    """Record use, at most once a minute per key (tile loads would otherwise write a lot)."""
    last = row.get("last_used_at")
    if last is not None and time.time() - last.timestamp() < 60:
        return
    # committed with the request's connection (the pool commits on a clean return)
    conn.execute("UPDATE api_keys SET last_used_at = now() WHERE id = %s", (row["id"],))


# --------------------------------------------------------------------------- sessions


def load_secret(settings: AuthSettings, var: Path) -> bytes:
    """The HMAC secret: from the settings, else from (or generated into) the secret file."""
    if settings.secret is not None:
        value = settings.secret.get_secret_value().encode()
        if len(value) < 16:
            raise ConfigError("PETALAPOR_AUTH_SECRET must be at least 16 characters")
        return value
    path = settings.secret_file or (var / "auth_secret")
    value = read_or_create(path, lambda: secrets.token_urlsafe(48))
    if len(value) < 16:
        raise ConfigError(f"{path}: auth secret too short; delete the file to generate a new one")
    return value


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue_session(
    secret: bytes, viewer: Viewer, minutes: int, now: float | None = None
) -> tuple[str, int]:
    """A signed session token for a key's viewer and its expiry (Unix seconds)."""
    if viewer.is_public or viewer.key_id is None:
        raise AuthenticationError("a session needs an OPD or admin key")
    expires = int((now or time.time()) + minutes * 60)
    payload = _b64(
        json.dumps({"k": viewer.key_id, "r": viewer.role, "o": viewer.opd, "e": expires}).encode()
    )
    signature = _b64(hmac.new(secret, payload.encode(), hashlib.sha256).digest())
    return f"{SESSION_PREFIX}{payload}.{signature}", expires


def read_session(secret: bytes, token: str, now: float | None = None) -> Viewer:
    """The viewer a session token was issued for; AuthenticationError when forged or expired."""
    try:
        payload, signature = token.removeprefix(SESSION_PREFIX).split(".")
        expected = _b64(hmac.new(secret, payload.encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(expected, signature):
            raise ValueError("bad signature")
        claims = json.loads(_unb64(payload))
    except (ValueError, TypeError) as exc:
        raise AuthenticationError("invalid session token") from exc
    if claims.get("e", 0) < (now or time.time()):
        raise AuthenticationError("session expired; log in again")
    return Viewer(role=claims["r"], opd=claims.get("o"), key_id=claims["k"])


# --------------------------------------------------------------------------- rate limit


class TokenBucketLimiter:
    """In-memory token buckets, one per client key; thread-safe, bounded in size."""

    def __init__(self, rate: float, burst: int, max_clients: int = 50_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, client: str, now: float | None = None) -> float:
        """Take one token; returns 0 when allowed, else seconds until one is available."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.pop(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            self._buckets[client] = (tokens, now)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        return 0.0 if allowed else (1.0 - tokens) / self.rate


@dataclass
class AuthState:
    """What the app keeps for auth: settings, secret, limiter and recently verified credentials."""

    settings: AuthSettings
    secret: bytes
    limiter: TokenBucketLimiter
    #: sha256(credential) -> monotonic expiry; only exempts from the rate limit, never authorises.
    verified: dict[str, float] = field(default_factory=dict)

    def mark_verified(self, credential: str, seconds: float = 60.0) -> None:
        """Remember a credential that passed verification (bounded dict)."""
        if len(self.verified) > 10_000:
            self.verified.clear()
        self.verified[hash_token(credential)] = time.monotonic() + seconds

    def is_verified(self, credential: str) -> bool:
        """Was this credential verified recently?"""
        until = self.verified.get(hash_token(credential))
        return until is not None and until > time.monotonic()


def _credential(
    headers: dict[str, str], cookies: dict[str, str], method: str, cookie_name: str
) -> str | None:
    """The credential of a request: X-API-Key, Bearer, or (GET/HEAD only) the session cookie."""
    if headers.get("x-api-key"):
        return headers["x-api-key"].strip()
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    # the cookie only authorises reads, so a cross-site form cannot act with it
    if method in ("GET", "HEAD") and cookies.get(cookie_name):
        return cookies[cookie_name]
    return None


class RateLimitMiddleware:
    """429 with Retry-After once a client IP exceeds its public token bucket.

    Requests carrying a credential that :func:`viewer` verified recently are not
    counted; everything else (no key, a wrong key) is charged to the client's IP.
    """

    def __init__(self, app: ASGIApp, state: AuthState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Charge the client's bucket, or answer 429."""
        if scope["type"] != "http" or scope["path"].startswith(
            tuple(self.state.settings.rate_exempt_prefixes)
        ):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        cred = _credential(
            {k.lower(): v for k, v in request.headers.items()},
            request.cookies,
            request.method,
            self.state.settings.cookie_name,
        )
        client = _client_ip(request, self.state.settings)
        if client in self.state.settings.rate_exempt_clients:
            await self.app(scope, receive, send)
            return
        if cred is None or not self.state.is_verified(cred):
            wait = self.state.limiter.take(client)
            if wait > 0:
                await _too_many(send, wait)
                return
        await self.app(scope, receive, send)


def _client_ip(request: Request, settings: AuthSettings) -> str:
    """The client address (first X-Forwarded-For hop when the proxy is trusted)."""
    if settings.trust_forwarded_for:
        forwarded = request.headers.get("x-forwarded-for", "")
        if forwarded:
            return forwarded.split(",")[0].strip()
    return request.client.host if request.client else "unknown"


async def _too_many(send: Send, wait: float) -> None:
    retry = max(1, math.ceil(wait))
    body = json.dumps(
        {"detail": f"too many requests; retry in {retry} s", "error": "RateLimited"}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 429,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(retry).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


# --------------------------------------------------------------------------- dependencies


def auth_state(request: Request) -> AuthState:
    """The app's :class:`AuthState` (set by :func:`install_auth`)."""
    state = getattr(request.app.state, "auth", None)
    if state is None:
        raise ConfigError(
            "auth is not installed on this app; call api.auth.install_auth(app, settings)"
        )
    return state


def resolve(request: Request, credential: str) -> Viewer:
    """Verify a credential (API key or session token) against the database."""
    state = auth_state(request)
    with request.app.state.pool.connection() as conn:
        if credential.startswith(SESSION_PREFIX):
            claimed = read_session(state.secret, credential)
            row = _active_key(conn, claimed.key_id or "")
            if row is None or row["role"] != claimed.role or row["opd"] != claimed.opd:
                raise AuthenticationError("the key behind this session was revoked")
            found = claimed
        else:
            found = verify_key(conn, credential)
    state.mark_verified(credential)
    return found


def viewer(request: Request) -> Viewer:
    """FastAPI dependency: who is asking (public without a credential).

    Raises :class:`AuthenticationError` (401) for an unknown, revoked, malformed or
    expired credential: a wrong key never silently falls back to public.
    """
    cached = getattr(request.state, "viewer", None)
    if cached is not None:
        return cached
    state = auth_state(request)
    cred = _credential(
        {k.lower(): v for k, v in request.headers.items()},
        request.cookies,
        request.method,
        state.settings.cookie_name,
    )
    found = PUBLIC if cred is None else resolve(request, cred)
    request.state.viewer = found
    return found


def require_opd(who: Annotated[Viewer, Depends(viewer)]) -> Viewer:
    """Dependency: an OPD or admin key is needed (401 without one)."""
    return who.require_key()


def require_admin(who: Annotated[Viewer, Depends(viewer)]) -> Viewer:
    """Dependency: an admin key is needed (401 without a key, 403 with an OPD key)."""
    if who.is_public:
        raise AuthenticationError("an admin API key is required (X-API-Key)")
    if not who.is_admin:
        raise PermissionDeniedError("this needs an admin key")
    return who


class MemoResolver:
    """``(headers) -> Viewer`` for code that must not wait on the database per request.

    The tile service resolves viewers from headers alone (also in its cache
    middleware).  Results, good and bad, are memoised for ``ttl`` seconds per
    credential hash, so a revoked key may still be honoured by the tiles for that
    long; only a miss reads the ``api_keys`` row.  Reads the same credentials as
    :func:`viewer`: ``X-API-Key``, ``Authorization: Bearer`` and the session cookie.
    """

    def __init__(self, app: FastAPI, ttl: float = 10.0, max_entries: int = 10_000) -> None:
        self.app = app
        self.ttl = ttl
        self.max_entries = max_entries
        self._memo: dict[str, tuple[float, Viewer | None]] = {}
        self._lock = threading.Lock()

    def __call__(self, headers: Mapping[str, str]) -> Viewer:
        """The viewer for these request headers; AuthenticationError for a bad credential."""
        state: AuthState = self.app.state.auth
        lowered = {k.lower(): v for k, v in headers.items()}
        cred = _credential(
            lowered, _cookies(lowered.get("cookie", "")), "GET", state.settings.cookie_name
        )
        if cred is None:
            return PUBLIC
        digest = hash_token(cred)
        now = time.monotonic()
        hit = self._memo.get(digest)
        if hit is None or hit[0] < now:
            found: Viewer | None
            try:
                found = self._verify(state, cred)
            except AuthenticationError:
                found = None
            with self._lock:
                if len(self._memo) >= self.max_entries:
                    self._memo.clear()
                self._memo[digest] = hit = (now + self.ttl, found)
        if hit[1] is None:
            raise AuthenticationError("unknown, revoked or expired credential")
        state.mark_verified(cred)
        return hit[1]

    def _verify(self, state: AuthState, cred: str) -> Viewer:
        with self.app.state.pool.connection() as conn:
            if cred.startswith(SESSION_PREFIX):
                claimed = read_session(state.secret, cred)
                row = _active_key(conn, claimed.key_id or "")
                if row is None or row["role"] != claimed.role or row["opd"] != claimed.opd:
                    raise AuthenticationError("the key behind this session was revoked")
                return claimed
            return verify_key(conn, cred)


def _cookies(header: str) -> dict[str, str]:
    """Cookie header -> dict (only what :func:`_credential` needs)."""
    out: dict[str, str] = {}
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep:
            out[name] = value.strip('"')
    return out


# --------------------------------------------------------------------------- assembly


@dataclass
class AuthFactory:
    """Registers ``GET /auth/whoami`` and ``POST /auth/session`` (key → signed token)."""

    router: APIRouter = field(default_factory=APIRouter)

    def __post_init__(self) -> None:
        self.register_routes()

    def register_routes(self) -> None:
        """Add the two auth endpoints."""

        @self.router.get("/auth/whoami", tags=["auth"], summary="The caller's role and OPD")
        def whoami(who: Annotated[Viewer, Depends(viewer)]) -> dict:
            return {"role": who.role, "opd": who.opd, "key_id": who.key_id}

        @self.router.post(
            "/auth/session",
            tags=["auth"],
            summary="Exchange an API key (X-API-Key) for a short-lived signed token",
        )
        def session(request: Request, who: Annotated[Viewer, Depends(require_opd)]) -> dict:
            state = auth_state(request)
            token, expires = issue_session(state.secret, who, state.settings.session_minutes)
            return {
                "token": token,
                "token_type": "bearer",
                "expires_at": expires,
                "role": who.role,
                "opd": who.opd,
            }


def install_auth(app: FastAPI, var: Path, settings: AuthSettings | None = None) -> AuthState:
    """Attach auth to an app: state, rate-limit middleware and the ``/auth`` routes."""
    settings = settings or AuthSettings()
    state = AuthState(
        settings=settings,
        secret=load_secret(settings, var),
        limiter=TokenBucketLimiter(
            settings.rate_per_second, settings.rate_burst, settings.rate_max_clients
        ),
    )
    app.state.auth = state
    app.add_middleware(RateLimitMiddleware, state=state)
    app.include_router(AuthFactory().router)
    return state
