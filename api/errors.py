"""One table from domain error to HTTP status, and the handlers built from it."""

from __future__ import annotations

import logging

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from petalapor.errors import (
    AuthenticationError,
    ConflictError,
    DataError,
    InvalidParameterError,
    NotFoundError,
    PermissionDeniedError,
    PetalaporError,
)

log = logging.getLogger("petalapor.api")

#: Domain error class -> HTTP status.  Order matters: subclasses first.
STATUS_CODES: dict[type[Exception], int] = {
    NotFoundError: 404,
    InvalidParameterError: 400,
    DataError: 422,
    ConflictError: 409,
    AuthenticationError: 401,
    PermissionDeniedError: 403,
    PetalaporError: 500,
}


def _handler(status: int):
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        if status >= 500:
            log.exception("unhandled petalapor error", exc_info=exc)
        headers = {"WWW-Authenticate": "ApiKey"} if status == 401 else None
        return JSONResponse(
            {"detail": str(exc), "error": type(exc).__name__}, status_code=status, headers=headers
        )

    return handle


async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with each problem as 'where: what' so the reason is readable."""
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        problems.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
    return JSONResponse(
        {"detail": "; ".join(problems), "errors": jsonable(exc.errors())}, status_code=422
    )


def jsonable(errors: list[dict]) -> list[dict]:
    """Pydantic error dicts without non-JSON values (exceptions in ``ctx``)."""
    out = []
    for err in errors:
        err = dict(err)
        if "ctx" in err:
            err["ctx"] = {k: str(v) for k, v in err["ctx"].items()}
        err.pop("url", None)
        out.append(err)
    return out


async def _database_down(request: Request, exc: psycopg.OperationalError) -> JSONResponse:
    log.error("database unavailable: %s", exc)
    return JSONResponse(
        {"detail": "database unavailable", "error": "DatabaseUnavailable"}, status_code=503
    )


def add_exception_handlers(app: FastAPI) -> None:
    """Register one handler per entry of :data:`STATUS_CODES`."""
    for exc_class, status in STATUS_CODES.items():
        app.add_exception_handler(exc_class, _handler(status))
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(psycopg.OperationalError, _database_down)
