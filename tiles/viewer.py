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

The app (``api/app.py``) passes :class:`api.auth.MemoResolver`, which checks
``X-API-Key: <key>``, ``Authorization: Bearer <key>`` or the session cookie
against the ``api_keys`` table.  A tile service built without it uses
:func:`public_only`.  A key that is sent but unknown is a 401, not a silent
downgrade to public.  Keys in query strings are not accepted (they leak into
logs and shared caches).
"""

from __future__ import annotations

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


def public_only(headers: Mapping[str, str]) -> Viewer:
    """Default resolver of a tile service built without the app's auth: public viewers only.

    A request that presents a key gets a 401: this service cannot check it, and
    serving it the public variant silently would hide the mistake.
    """
    if presented_key(headers) is not None:
        raise AuthenticationError(
            "this tile service checks no API keys (the app's auth does: api.auth.MemoResolver)"
        )
    return PUBLIC


async def get_viewer(request: Request) -> ViewerLike:
    """FastAPI dependency: the viewer, from the tile service's resolver (non-blocking)."""
    return request.app.state.tiles.resolver(request.headers)
