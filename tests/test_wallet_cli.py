"""`cbdc-wallet` as a user runs it (subprocesses): help, create -> address -> request, restore, errors."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wallet.requests import parse_request

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ["create", "restore", "accounts", "address", "request", "check-address"]


def wallet(*args: str, env: dict | None = None, stdin: str = "") -> subprocess.CompletedProcess:
    """Run the wallet CLI detached from any terminal (so password prompts read stdin)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CBDC_WALLET_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "wallet.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env=full_env, input=stdin, start_new_session=True)


def one_line_error(out: subprocess.CompletedProcess, text: str) -> None:
    assert out.returncode == 1, out
    assert out.stdout == "" and out.stderr.count("\n") == 1 and out.stderr.startswith("cbdc-wallet: ")
    assert text in out.stderr and "Traceback" not in out.stderr


def test_every_command_has_help_with_an_example():
    for command in COMMANDS + ["accounts add"]:
        out = wallet(*command.split(), "--help")
        assert out.returncode == 0, out.stderr
        assert "example:" in out.stdout and f"cbdc-wallet {command}" in out.stdout, command
    top = wallet("--help")
    assert all(c in top.stdout for c in COMMANDS) and "example:" in top.stdout


@pytest.fixture(scope="module")
def created(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "home" / "wallet.dat"
    env = {"CBDC_WALLET_FILE": str(path), "CBDC_WALLET_PASSWORD": "correct horse"}
    out = wallet("create", "--bank", "bank-a", env=env)
    assert out.returncode == 0, out.stderr
    return path, env, out.stdout


def test_create_prints_the_address_and_the_phrase_once(created):
    path, env, stdout = created
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    phrase_line = [line for line in stdout.splitlines() if len(line.split()) == 24]
    assert len(phrase_line) == 1
    assert "account main at bank-a: bank-a1" in stdout
    again = wallet("create", "--bank", "bank-a", env=env)
    one_line_error(again, "already exists")


def test_address_accounts_and_request_flow(created, tmp_path):
    path, env, stdout = created
    address = wallet("address", env=env)
    assert address.returncode == 0 and address.stdout.strip() in stdout
    added = wallet("accounts", "add", "savings", "--bank", "bank-b", env=env)
    assert added.returncode == 0 and "bank-b1" in added.stdout
    listed = wallet("accounts", env=env).stdout.splitlines()
    assert [line.split("\t")[:2] for line in listed] == [["main", "bank-a"], ["savings", "bank-b"]]
    password_only = {"CBDC_WALLET_PASSWORD": env["CBDC_WALLET_PASSWORD"]}
    assert wallet("accounts", "--wallet", str(path), "list", env=password_only).stdout.splitlines() == listed
    savings = wallet("address", "savings", env=env).stdout.strip()
    assert savings == listed[1].split("\t")[2]
    qr = tmp_path / "req.svg"
    request = wallet("request", "12.5", "--account", "savings", "--memo", "lunch", "--expires-in", "2h",
                     "--qr", str(qr), env=env)
    assert request.returncode == 0, request.stderr
    parsed = parse_request(request.stdout.strip(), int(time.time()))
    assert (str(parsed.address), parsed.amount, parsed.memo) == (savings, 1250, "lunch")
    assert 7100 < parsed.expires - time.time() <= 7200
    assert "12.50" in request.stderr and qr.read_text().startswith("<?xml")


def test_restore_from_the_phrase_gives_the_same_address(created, tmp_path):
    path, env, stdout = created
    phrase = next(line for line in stdout.splitlines() if len(line.split()) == 24)
    other = tmp_path / "restored.dat"
    password_file = tmp_path / "pw"
    password_file.write_text("another password\n")
    out = wallet("restore", "--bank", "bank-a", "--wallet", str(other), "--password-file", str(password_file),
                 stdin=phrase + "\n")
    assert out.returncode == 0, out.stderr
    assert "restored" in out.stdout and phrase.split()[0] not in out.stdout.split(":")[0]
    assert wallet("address", "--wallet", str(other), "--password-file", str(password_file)).stdout \
        == wallet("address", env=env).stdout
    bad = wallet("restore", "--bank", "bank-a", "--wallet", str(tmp_path / "x.dat"), stdin="one two three\n",
                 env={"CBDC_WALLET_PASSWORD": "whatever1"})
    one_line_error(bad, "backup phrase is not valid")


def test_errors_are_one_line(created, tmp_path):
    path, env, _ = created
    one_line_error(wallet("address", env={**env, "CBDC_WALLET_PASSWORD": "wrong horse"}), "wrong password")
    one_line_error(wallet("address", "nobody", env=env), "no account named")
    one_line_error(wallet("request", "1.234", env=env), "not an amount")
    one_line_error(wallet("request", "1", "--expires-in", "soon", env=env), "not a duration")
    one_line_error(wallet("address", "--wallet", str(tmp_path / "none.dat")), "no wallet at")
    one_line_error(wallet("accounts", "add", "x", "--bank", "cb", env=env), "not a bank id")
    mismatch = wallet("create", "--bank", "bank-a", "--wallet", str(tmp_path / "n.dat"),
                      stdin="password1\npassword2\n")
    one_line_error(mismatch, "passwords differ")
    assert not (tmp_path / "n.dat").exists()
    usage = wallet("request", env=env)
    assert usage.returncode == 2 and "Traceback" not in usage.stderr


def test_tampered_wallet_file_fails_cleanly(created, tmp_path):
    path, env, _ = created
    copy = tmp_path / "copy.dat"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    copy.write_bytes(bytes(data))
    one_line_error(wallet("address", "--wallet", str(copy), env={"CBDC_WALLET_PASSWORD": "correct horse"}),
                   "damaged")


def test_check_address_is_kept(created):
    _, env, stdout = created
    address = wallet("address", env=env).stdout.strip()
    assert "bank bank-a" in wallet("check-address", address).stdout
