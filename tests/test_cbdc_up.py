"""`cbdc up` / `cbdc down` and the admin verbs, as an operator runs them (real processes)."""
from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys

import pytest

from cbdc.supervisor import free_port_block
from shared import db
from shared.crypto import PrivateKey
from tests.system_processes import ROOT, cbdc, pid_alive, wait_until


@pytest.fixture
def system_dir(tmp_path, pg_server):
    """Run `cbdc up` (central bank only) in its own state dir; yield (state_dir, process, env)."""
    prefix = f"t{secrets.token_hex(3)}_"
    port = free_port_block(1)
    env = dict(os.environ)
    if "CBDC_DATABASE_URL" not in env:
        env.pop("CBDC_DATABASE_URL", None)
    log = open(tmp_path / "up.log", "w")
    up = subprocess.Popen([sys.executable, "-m", "cbdc.cli", "up", "--banks", "0", "--state-dir", str(tmp_path),
                           "--base-port", str(port), "--db-prefix", prefix], cwd=ROOT, env=env, stdout=log,
                          stderr=subprocess.STDOUT)
    system_json = tmp_path / "system.json"
    wait_until(lambda: system_json.exists() or up.poll() is not None, "cbdc up to write system.json",
               on_fail=lambda: (tmp_path / "up.log").read_text())
    assert up.poll() is None, (tmp_path / "up.log").read_text()
    yield tmp_path, up, env
    if up.poll() is None:
        up.send_signal(signal.SIGINT)
        up.wait(timeout=60)
    log.close()
    if "CBDC_DATABASE_URL" in os.environ:
        import asyncio
        asyncio.run(db.drop_database(os.environ["CBDC_DATABASE_URL"], f"{prefix}central_bank"))


def _pids(state_dir) -> list[int]:
    system = json.loads((state_dir / "system.json").read_text())
    return [system["supervisor_pid"]] + [s["pid"] for s in system["services"]]


def test_up_admin_verbs_and_down_leave_nothing_behind(system_dir):
    state_dir, up, env = system_dir
    s = ["--state-dir", str(state_dir)]
    pids = _pids(state_dir)
    key = PrivateKey.generate().public_key.hex()
    out = cbdc("bank", "register", "bank-z", "--public-key", key, "--callback-url", "http://127.0.0.1:9", *s, env=env)
    assert out.returncode == 0, out.stderr
    assert "bank-z" in cbdc("bank", "list", *s, env=env).stdout
    proposed = cbdc("issue", "propose", "bank-z", "1000.50", *s, env=env)
    assert proposed.returncode == 0, proposed.stderr
    proposal_id = proposed.stdout.split()[1].rstrip(":")
    same = cbdc("issue", "approve", proposal_id, *s, env=env)
    assert same.returncode == 1 and "approver_is_proposer" in same.stderr and "Traceback" not in same.stderr
    other = cbdc("issue", "approve", proposal_id, "--operator", "op2", *s, env=env)
    assert other.returncode == 0, other.stderr
    supply = cbdc("supply", *s, env=env).stdout
    assert "1000.50" in supply.splitlines()[0] and "outstanding" in supply

    down = cbdc("down", *s, env=env)
    assert down.returncode == 0, down.stderr
    assert up.wait(timeout=60) == 0
    assert not any(pid_alive(p) for p in pids)
    assert not (state_dir / "system.json").exists()
    assert not (state_dir / "pgdata" / "postmaster.pid").exists()
    assert oct((state_dir / "keys" / "op1.seed").stat().st_mode & 0o777) == "0o600"


def test_a_crashed_child_is_reported_and_everything_stops(system_dir):
    state_dir, up, env = system_dir
    pids = _pids(state_dir)
    os.kill(pids[1], signal.SIGKILL)  # the central bank
    assert up.wait(timeout=60) == 1
    log = (state_dir / "up.log").read_text()
    assert "central-bank exited unexpectedly" in log
    assert not any(pid_alive(p) for p in pids)
    assert not (state_dir / "system.json").exists()


def test_admin_verbs_without_a_system_fail_in_one_line(tmp_path):
    out = cbdc("supply", "--state-dir", str(tmp_path))
    assert out.returncode == 2 and "cbdc up" in out.stderr and "Traceback" not in out.stderr
