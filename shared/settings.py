"""Typed settings from environment variables: one frozen dataclass per service, read in one place.

A field ``batch_wait_ms: float = 2.0`` of a class loaded with prefix ``CBDC_`` is read from
``CBDC_BATCH_WAIT_MS``. A field without a default is required. A missing or mistyped value fails
at start-up with the variable's name (ConfigError). Fields marked ``secret()`` are masked in repr.
"""
from __future__ import annotations

import dataclasses
import os
import types
import typing
from typing import Any, Mapping, TypeVar

from shared.errors import ConfigError

T = TypeVar("T")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def secret(default: Any = dataclasses.MISSING) -> Any:
    """A field whose value is never shown in repr or logs."""
    return dataclasses.field(default=default, repr=False, metadata={"secret": True})


def _parse(name: str, raw: str, kind: Any) -> Any:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):  # Optional[X]
        inner = [a for a in typing.get_args(kind) if a is not type(None)]
        if raw == "":
            return None
        return _parse(name, raw, inner[0])
    try:
        if kind is bool:
            low = raw.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError("expected true/false")
        if kind is int:
            return int(raw.strip())
        if kind is float:
            return float(raw.strip())
        if kind is str:
            return raw
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r} is not a valid {getattr(kind, '__name__', kind)}: {exc}") from None
    raise ConfigError(f"{name}: unsupported setting type {kind!r}")


def load_settings(cls: type[T], prefix: str, environ: Mapping[str, str] | None = None, **overrides: Any) -> T:
    """Build ``cls`` from ``{prefix}{FIELD}`` variables; ``overrides`` win over the environment."""
    environ = os.environ if environ is None else environ
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        name = f"{prefix}{f.name.upper()}"
        if f.name in overrides:
            values[f.name] = overrides[f.name]
        elif name in environ:
            values[f.name] = _parse(name, environ[name], hints[f.name])
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
            raise ConfigError(f"{name} is required but not set")
    settings = cls(**values)
    check = getattr(settings, "check", None)
    if check is not None:
        check()
    return settings


def load_signing_key(seed_hex: str | None, key_file: str | None, prefix: str, owner: str):
    """A service's Ed25519 key from ``{prefix}SIGNING_SEED`` (hex) or ``{prefix}SIGNING_KEY_FILE``."""
    from pathlib import Path

    from shared.crypto import PrivateKey
    if not seed_hex:
        if not key_file:
            raise ConfigError(f"{prefix}SIGNING_KEY_FILE or {prefix}SIGNING_SEED is required")
        try:
            seed_hex = Path(key_file).read_text(encoding="ascii").strip()
        except OSError as exc:
            raise ConfigError(f"{prefix}SIGNING_KEY_FILE: cannot read it ({exc.strerror})") from None
    try:
        return PrivateKey(bytes.fromhex(seed_hex))
    except ValueError:
        raise ConfigError(f"{owner}'s signing seed must be 64 hex characters") from None


@dataclasses.dataclass(frozen=True)
class LedgerSettings:
    """Engine settings shared by both tiers (prefix ``CBDC_``)."""
    database_url: str | None = secret(None)   # None: start the embedded PostgreSQL
    state_dir: str = ".state"                 # where the embedded PostgreSQL keeps its data
    batch_max: int = 500                      # flush a micro-batch at this many transactions
    batch_wait_ms: float = 2.0                # ... or this long after its first transaction
    batch_queue_max: int = 100_000            # submissions waiting; beyond it callers get 503
    flushers: int = 2                         # batches in flight at once per process
    db_pool_max: int = 8
    db_retries_max: int = 5                   # deadlock / serialization retries of one batch

    def check(self) -> None:
        if self.batch_max < 1 or self.batch_wait_ms < 0 or self.flushers < 1 or self.batch_queue_max < 1:
            raise ConfigError("CBDC_BATCH_MAX, CBDC_FLUSHERS and CBDC_BATCH_QUEUE_MAX must be >= 1, "
                              "CBDC_BATCH_WAIT_MS >= 0")
