"""What `cbdc up` keeps in its state directory, and how the other commands find it.

    STATE_DIR/keys/<name>.seed   Ed25519 seeds (hex, mode 0600): operators op1 and op2, the
                                 central bank's signing key, one per bank; generated once, reused
    STATE_DIR/system.json        the running system: each service's name, URL, pid, database,
                                 and the supervisor's pid (removed when the system stops)
    STATE_DIR/logs/<name>.log    each service's output
    STATE_DIR/pgdata             the embedded PostgreSQL (when CBDC_DATABASE_URL is not set)
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from shared.crypto import PrivateKey
from shared.errors import CBDCError

OPERATORS = ("op1", "op2")
CENTRAL_BANK_KEY = "central-bank"


class StateError(CBDCError):
    status = 400
    code = "state_error"
    title = "No usable system state"


@dataclass
class Service:
    name: str           # "central-bank", "bank-a", ...
    kind: str           # "central_bank" or "commercial_bank"
    url: str
    pid: int
    database: str
    metrics_url: str = ""


@dataclass
class System:
    supervisor_pid: int
    database_server: str          # the PostgreSQL server URL (secrets are never stored here)
    embedded_postgres: bool
    services: list[Service] = field(default_factory=list)

    def service(self, name: str) -> Service:
        for s in self.services:
            if s.name == name:
                return s
        raise StateError(f"no service named {name!r} in the running system")

    @property
    def central_bank(self) -> Service:
        return self.service("central-bank")

    @property
    def banks(self) -> list[Service]:
        return [s for s in self.services if s.kind == "commercial_bank"]


def state_path(state_dir: str | Path) -> Path:
    return Path(state_dir).expanduser().resolve()


def load_key(state_dir: str | Path, name: str, *, create: bool = False) -> PrivateKey:
    """The key ``name`` from STATE_DIR/keys, generated (mode 0600) if ``create`` and missing."""
    path = state_path(state_dir) / "keys" / f"{name}.seed"
    if not path.exists():
        if not create:
            raise StateError(f"no key {name!r} in {path.parent} (start the system with `cbdc up`)")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = PrivateKey.generate()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key.seed.hex())
        return key
    try:
        return PrivateKey(bytes.fromhex(path.read_text().strip()))
    except ValueError:
        raise StateError(f"key file {path} is damaged") from None


def write_system(state_dir: str | Path, system: System) -> None:
    path = state_path(state_dir) / "system.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(system), indent=2))
    tmp.replace(path)


def read_system(state_dir: str | Path) -> System:
    path = state_path(state_dir) / "system.json"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise StateError(f"no running system found ({path} is missing); start one with `cbdc up`") from None
    except ValueError:
        raise StateError(f"{path} is damaged") from None
    return System(raw["supervisor_pid"], raw["database_server"], raw["embedded_postgres"],
                  [Service(**s) for s in raw["services"]])


def remove_system(state_dir: str | Path) -> None:
    (state_path(state_dir) / "system.json").unlink(missing_ok=True)
