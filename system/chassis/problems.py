"""Problem details (RFC 9457) for every error, and their place in the OpenAPI schema.

Every ``HTTPException`` becomes ``application/problem+json``; an unexpected exception
becomes a 500 problem that names no internals (the trace id lets an operator find it).
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.openapi.datastructures import ResponseSpec
from litestar.plugins.problem_details import (
    ProblemDetailsConfig,
    ProblemDetailsException,
    ProblemDetailsPlugin,
)
from msgspec import Struct
from opentelemetry import trace

log = logging.getLogger("system.chassis")
PROBLEM_JSON = "application/problem+json"

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    413: "Content Too Large",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


class Problem(Struct, omit_defaults=True):
    """The RFC 9457 body, as documented in every service's OpenAPI schema."""

    status: int
    title: str
    type: str = "about:blank"
    detail: str | None = None
    instance: str | None = None
    extra: dict[str, Any] | list[Any] | None = None


def problem_responses(*codes: int) -> dict[int, ResponseSpec]:
    """OpenAPI ``responses`` entries for the problems a route can answer with."""
    return {
        code: ResponseSpec(
            data_container=Problem,
            description=_TITLES.get(code, "Error"),
            media_type=PROBLEM_JSON,
            generate_examples=False,
        )
        for code in codes
    }


def problem_response(status: int, detail: str, **extra: Any) -> Response[dict[str, Any]]:
    body: dict[str, Any] = {
        "type": "about:blank",
        "status": status,
        "title": _TITLES.get(status, "Error"),
        "detail": detail,
    }
    if extra:
        body["extra"] = extra
    return Response(body, status_code=status, media_type=PROBLEM_JSON)


def unexpected_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    context = trace.get_current_span().get_span_context()
    trace_id = format(context.trace_id, "032x") if context.is_valid else None
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(
        500,
        "the service failed to handle this request",
        **({"trace_id": trace_id} if trace_id else {}),
    )


def _from_http_exception(exc: HTTPException) -> ProblemDetailsException:
    """RFC 9457 wants ``title`` to name the kind of problem and ``detail`` this occurrence;
    Litestar's default mapping puts the exception's message in ``title``."""
    return ProblemDetailsException(
        status_code=exc.status_code,
        title=_TITLES.get(exc.status_code, HTTPStatus(exc.status_code).phrase),
        detail=exc.detail,
        extra=exc.extra,
        headers=exc.headers,
    )


def problem_details_plugin() -> ProblemDetailsPlugin:
    return ProblemDetailsPlugin(
        ProblemDetailsConfig(exception_to_problem_detail_map={HTTPException: _from_http_exception})
    )


__all__ = [
    "PROBLEM_JSON",
    "Problem",
    "problem_details_plugin",
    "problem_response",
    "problem_responses",
    "unexpected_error",
]
