"""One error hierarchy for the whole product, rendered as RFC 9457 problem+json.

    CBDCError                      500  internal_error (never shown with details)
    ├── BadRequest                 400  malformed_request, malformed_json, ...
    ├── Unauthorized               401  signature_missing, signature_invalid, ...
    ├── Forbidden                  403  not_permitted, bank_suspended, ...
    ├── NotFound                   404  not_found, transaction_not_found, ...
    ├── Conflict                   409  input_already_spent, payment_conflict, ...
    ├── PayloadTooLarge            413  request_too_large
    ├── Unprocessable              422  amounts_must_balance, unknown_field, ...
    │   └── ValidationFailed       422  a transaction failed the pure validation core
    ├── TooManyRequests            429  rate_limited
    └── Unavailable                503  overloaded, not_ready, upstream_unavailable

Every error carries an HTTP status and a stable, machine-readable ``code``; ``index`` names the
offending input, output or witness where one applies. Codes are API: never rename one.
"""
from __future__ import annotations

from typing import Any


class CBDCError(Exception):
    status = 500
    code = "internal_error"
    title = "Internal error"

    def __init__(self, detail: str | None = None, *, code: str | None = None,
                 index: int | None = None, extra: dict[str, Any] | None = None) -> None:
        super().__init__(detail or self.title)
        if code is not None:
            self.code = code
        self.detail = detail or self.title
        self.index = index
        self.extra = extra or {}

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        """The RFC 9457 problem object (``type`` is a stable URN built from the code)."""
        problem: dict[str, Any] = {
            "type": f"urn:cbdc:error:{self.code}",
            "title": self.title,
            "status": self.status,
            "code": self.code,
            "detail": self.detail,
        }
        if self.index is not None:
            problem["index"] = self.index
        if instance is not None:
            problem["instance"] = instance
        problem.update(self.extra)
        return problem

    def __repr__(self) -> str:
        suffix = "" if self.index is None else f", index={self.index}"
        return f"{type(self).__name__}({self.code!r}{suffix}: {self.detail})"


class BadRequest(CBDCError):
    status = 400
    code = "malformed_request"
    title = "Malformed request"


class Unauthorized(CBDCError):
    status = 401
    code = "unauthenticated"
    title = "Authentication failed"


class Forbidden(CBDCError):
    status = 403
    code = "not_permitted"
    title = "Not permitted"


class NotFound(CBDCError):
    status = 404
    code = "not_found"
    title = "Not found"


class Conflict(CBDCError):
    status = 409
    code = "conflict"
    title = "Conflict with the ledger's state"


class PayloadTooLarge(CBDCError):
    status = 413
    code = "request_too_large"
    title = "Request body too large"


class Unprocessable(CBDCError):
    status = 422
    code = "unprocessable"
    title = "Request is well-formed but invalid"


class ValidationFailed(Unprocessable):
    """A transaction failed the pure validation core (see shared.validation for the codes)."""
    title = "Transaction rejected"


class TooManyRequests(CBDCError):
    status = 429
    code = "rate_limited"
    title = "Too many requests"


class Unavailable(CBDCError):
    status = 503
    code = "unavailable"
    title = "Service unavailable"


class ConfigError(Exception):
    """A missing or mistyped setting; raised at start-up, never over HTTP."""
