"""OpenAI-style error bodies: every 4xx/5xx the server sends looks like OpenAI's, so SDKs raise the right type.

    {"error": {"message": "...", "type": "invalid_request_error", "param": "temperature", "code": null}}
"""
from __future__ import annotations

from http import HTTPStatus

from fastapi.responses import JSONResponse

TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
         404: "not_found_error", 405: "invalid_request_error", 408: "timeout_error", 413: "invalid_request_error",
         422: "invalid_request_error", 429: "rate_limit_error", 503: "service_unavailable_error"}


class APIError(Exception):
    """An error the client caused or can act on; becomes an OpenAI-style JSON body."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type or TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        self.headers = headers or {}

    def body(self) -> dict:
        return error_body(self.message, self.type, self.param, self.code)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def http_error(status: int, detail: str | None = None) -> APIError:
    """Starlette's own errors (unknown route, wrong method) in OpenAI's shape."""
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "error"
    return APIError(status, detail or phrase)


def validation_error(errors: list[dict]) -> APIError:
    """pydantic's list of errors as one readable message, naming the first offending field as `param`."""
    messages, params = [], []
    for e in errors[:5]:
        loc = [str(p) for p in e.get("loc", ()) if p != "body"]
        # union members show up as locations ("str", "list[int]"): keep only real field names and indexes
        loc = [p for p in loc if not any(c in p for c in "[]") and p not in {"str", "int", "float", "bool"}]
        param = ".".join(loc) or None
        if e.get("type") == "json_invalid":
            return APIError(400, f"the request body is not valid JSON: {e.get('msg')} "
                                 f"(at position {e.get('loc', [None, '?'])[-1]})")
        if e.get("type") == "missing" and not loc:
            return APIError(400, "the request needs a JSON body")
        msg = e.get("msg", "invalid value").removeprefix("Value error, ")
        messages.append(f"{param}: {msg}" if param else msg)
        params.append(param)
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return APIError(400, "; ".join(dict.fromkeys(messages)) + more, param=params[0] if params else None)
