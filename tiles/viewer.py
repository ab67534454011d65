"""Who is looking: the viewer role that decides what a tile may show.

The interface is deliberately small so the auth system (``api/auth.py``) can
replace the default without touching the tile code:

* :class:`Viewer` -- ``role`` is ``"public"``, ``"opd"`` or ``"admin"``; an
  OPD viewer also has ``opd`` (its code).  Any object with those two
  attributes works.
* a **resolver** -- a callable ``(headers) -> Viewer`` that may raise
  :class:`~petalapor.errors.AuthenticationError` (401) for a key it does not
  know.  The tile service uses it for the FastAPI dependency *and* for the
  cache middleware's fast path, so it must not block (no database calls, or a
  memo in front of them).
* :func:`get_viewer` -- the FastAPI dependency the tile routes use by default;
  ``TileFactory(viewer=...)`` swaps it for another dependency returning a
  Viewer.  When it is swapped without also giving the service a resolver,
  the middleware's fast path serves public (key-less) requests only.

The default, :class:`KeyResolver`, is the minimal stand-in assumed until the
auth system lands: **public unless a valid key** is sent as ``X-API-Key:
<key>`` or ``Authorization: Bearer <key>``; keys come from
``PETALAPOR_TILES_ADMIN_KEYS`` / ``PETALAPOR_TILES_OPD_KEYS``.  A key that is
sent but unknown is a 401, not a silent downgrade to public.  Keys in query
strings are not accepted (they leak into logs and shared caches).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from fastapi import Request

from petalapor.errors import AuthenticationError

ROLES: tuple[str, ...] = ("public", "opd", "admin")
#: Request headers that can carry a key (the Vary header of every tile lists them).
KEY_HEADERS: tuple[str, ...] = ("x-api-key", "authorization")


class ViewerLike(Protocol):
    """What the tile code reads from a viewer."""

    role: str
    opd: str | None


@dataclass(frozen=True)
class Viewer:
    """A role, and the OPD for OPD viewers."""

    role: str = "public"
    opd: str | None = None

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r}; known: {', '.join(ROLES)}")


PUBLIC = Viewer()


def is_privileged(viewer: ViewerLike) -> bool:
    """True for OPD and admin viewers (raw report points, no k-anonymity)."""
    return viewer.role in ("opd", "admin")


def scope_of(viewer: ViewerLike) -> str:
    """Roll-up scope: ``"all"`` reports for privileged viewers, else ``"public"`` ones only."""
    return "all" if is_privileged(viewer) else "public"


def cache_role(viewer: ViewerLike) -> str:
    """The viewer's part of a cache key (OPD viewers keep their code for future scoping)."""
    if viewer.role == "opd":
        return f"opd:{viewer.opd or ''}"
    return viewer.role


Resolver = Callable[[Mapping[str, str]], ViewerLike]


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key in ``X-API-Key`` or ``Authorization: Bearer``, if any."""
    key = headers.get("x-api-key")
    if key:
        return key.strip()
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return None


class KeyResolver:
    """Default resolver: static admin and OPD keys from settings, public without a key."""

    def __init__(
        self, admin_keys: tuple[str, ...] = (), opd_keys: Mapping[str, str] | None = None
    ) -> None:
        self._admin = tuple(admin_keys)
        self._opd = dict(opd_keys or {})

    def __call__(self, headers: Mapping[str, str]) -> Viewer:
        """Resolve the request headers to a Viewer (AuthenticationError for an unknown key)."""
        key = presented_key(headers)
        if key is None:
            return PUBLIC
        for admin in self._admin:
            if hmac.compare_digest(key.encode(), admin.encode()):
                return Viewer("admin")
        for opd_key, opd in self._opd.items():
            if hmac.compare_digest(key.encode(), opd_key.encode()):
                return Viewer("opd", opd)
        raise AuthenticationError("unknown or revoked key")


async def get_viewer(request: Request) -> ViewerLike:
    """FastAPI dependency: the viewer, from the tile service's resolver (non-blocking)."""
    return request.app.state.tiles.resolver(request.headers)
