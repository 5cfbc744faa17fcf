"""`cbdc-wallet` against a running system (central bank + two banks as processes): create, register,
fund, pay on-us, pay cross-bank (a payment request; bounded wait until the payee is credited),
history, status, defund, refusals in plain words, and retries after a forced timeout that pay and
fund exactly once (on-us, cross-bank, funding). The module ends with the system audit (I1-I5) at quiescence."""
from __future__ import annotations

import asyncio

import pytest

from shared.amounts import parse_major
from shared.crypto import PrivateKey
from shared.address import encode_address
from wallet.journal import ACCEPTED, PENDING, Journal, journal_path
from tests.system_harness import System
from tests.wallet_harness import WalletUser, WithholdingProxy, new_wallet

CREDIT_WAIT_SECONDS = 20.0


@pytest.fixture(scope="module")
async def system(pg_server):
    s = System(pg_server)
    try:
        await s.start()
        yield s
    finally:
        await s.stop()


@pytest.fixture(scope="module")
async def users(system, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wallets")
    a, b = system.services["bank-a"].url, system.services["bank-b"].url
    alice, bob, carol = await asyncio.gather(
        new_wallet(tmp, "alice", "bank-a", a, tier="full", demo_deposit="30000.00"),
        new_wallet(tmp, "bob", "bank-a", a),
        new_wallet(tmp, "carol", "bank-b", b, deposit_account=False))
    return alice, bob, carol


async def wait_balance(user: WalletUser, expected: str, timeout_seconds: float = CREDIT_WAIT_SECONDS) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_seconds
    while (balance := await user.balance()) != expected:
        assert loop.time() < deadline, f"{user.path.parent.name}'s balance is {balance}, expected {expected}"
        await asyncio.sleep(0.2)


def one_line(out, *texts: str) -> None:
    assert out.returncode == 1 and out.stdout == "", out
    assert out.stderr.startswith("cbdc-wallet: ") and out.stderr.count("\n") == 1, out.stderr
    for text in texts:
        assert text in out.stderr, out.stderr


async def test_register_is_once_and_fund_moves_deposit_into_the_wallet(users):
    alice, bob, _ = users
    again = await alice.run("register", "--tier", "full", "--deposit-account")
    assert "already registered at bank-a" in again.stdout
    funded = await alice.run("fund", "500.00")
    assert funded.stdout.startswith("funded 500.00 from the deposit account")
    assert await alice.balance() == "500.00"
    one_line(await bob.run("fund", "1.00", ok=False), "deposit account does not have enough money",
             "[deposit_insufficient]")


async def test_pay_on_us_and_history(users):
    alice, bob, _ = users
    paid = await alice.run("pay", bob.address, "120.50", "--memo", "rent")
    assert paid.stdout.startswith(f"paid 120.50 to {bob.address} (on-us)")
    assert await alice.balance() == "379.50" and await bob.balance() == "120.50"
    history = (await alice.run("history")).stdout.splitlines()
    kinds = [line.split()[3] for line in history]
    assert kinds == ["mint", "transfer"] and "-120.50" in history[1] and "rent" in history[1]
    page = (await alice.run("history", "--limit", "1")).stdout.splitlines()
    assert len(page) == 2 and "--after" in page[1]
    seq = page[1].split("--after ")[1].split()[0]
    assert (await alice.run("history", "--after", seq)).stdout.splitlines()[0].split()[3] == "transfer"


async def test_pay_cross_bank_by_payment_request_until_the_payee_is_credited(users):
    alice, _, carol = users
    request = (await carol.run("request", "30.00", "--memo", "invoice 7")).stdout.strip()
    sent = await alice.run("pay", request, "--wait", "15")
    assert "(cross-bank), payment bank-a:" in sent.stdout, sent.stdout
    payment_id = sent.stdout.split("payment ")[1].split()[0]
    await wait_balance(carol, "30.00")
    assert await alice.balance() == "349.50"
    status = await alice.run("status", payment_id)
    assert "completed: the payee has been credited" in status.stdout
    assert "inbound" in (await carol.run("history")).stdout


async def test_refusals_are_one_line_in_plain_words(users):
    alice, bob, carol = users
    stranger = encode_address("bank-b", PrivateKey.generate().public_key)
    one_line(await alice.run("pay", stranger, "1.00", ok=False),
             "bank-a refused: the payee's bank does not know that wallet", "[payee_unknown]")
    one_line(await bob.run("pay", alice.address, "9000.00", ok=False), "insufficient funds")
    # carol (basic, no deposit account) may hold at most 20,000.00: bank-b refuses through bank-a
    await alice.run("fund", "20000.00")
    one_line(await alice.run("pay", carol.address, "19970.01", ok=False),
             "the payee's wallet cannot receive that much", "[payee_holding_limit]")
    await alice.run("defund", "20000.00")
    one_line(await alice.run("pay", "bank-a1notanaddress", "1.00", ok=False), "")
    # a refused payment frees its coins: nothing is left pending, the balance is unchanged
    with Journal(journal_path(alice.path)) as journal:
        assert journal.entries(PENDING) == []
    assert await alice.balance() == "349.50"


async def test_pay_retry_after_a_timeout_pays_once(system, users):
    alice, bob, _ = users
    proxy = await WithholdingProxy(system.services["bank-a"].url, "/v1/transfers").start()
    try:
        lost = await alice.run("pay", bob.address, "10.00", "--bank-url", proxy.url, "--timeout", "1", ok=False)
    finally:
        await proxy.stop()
    one_line(lost, "saved as pending", "run the same command again")
    assert proxy.applied == [201]                       # the bank applied it; the wallet never heard
    assert await bob.balance() == "130.50"
    with Journal(journal_path(alice.path)) as journal:
        [pending] = journal.entries(PENDING)
    assert "1 payment(s)" in (await alice.run("balance")).stdout
    retried = await alice.run("pay", bob.address, "10.00")
    assert "the bank already had it" in retried.stdout, retried.stdout
    assert await bob.balance() == "130.50" and await alice.balance() == "339.50"
    with Journal(journal_path(alice.path)) as journal:
        entry = journal.get(pending.tx_id)
        assert entry.state == ACCEPTED and entry.result["status"] == "exists" and entry.attempts == 2
        assert journal.entries(PENDING) == []
    assert f"transaction {pending.tx_id} (transfer): accepted" in (await alice.run("status", pending.tx_id)).stdout


async def test_cross_bank_retry_after_a_timeout_pays_once(system, users):
    alice, _, carol = users
    proxy = await WithholdingProxy(system.services["bank-a"].url, "/v1/payments").start()
    try:
        lost = await alice.run("pay", carol.address, "5.00", "--bank-url", proxy.url, "--timeout", "1", ok=False)
    finally:
        await proxy.stop()
    one_line(lost, "saved as pending")
    assert proxy.applied == [202]
    retried = await alice.run("pay", carol.address, "5.00", "--wait", "15")
    assert "the bank already had it" in retried.stdout and "completed" in retried.stdout, retried.stdout
    await wait_balance(carol, "35.00")
    assert await alice.balance() == "334.50"


async def test_fund_retry_after_a_timeout_funds_once(system, users):
    alice, _, _ = users
    proxy = await WithholdingProxy(system.services["bank-a"].url, "/v1/fundings").start()
    try:
        lost = await alice.run("fund", "50.00", "--bank-url", proxy.url, "--timeout", "1", ok=False)
    finally:
        await proxy.stop()
    one_line(lost, "saved as pending", "it will not fund twice")
    assert proxy.applied == [201]
    resumed = await alice.run("fund", "50.00")
    assert "resumed the pending funding" in resumed.stdout
    assert await alice.balance() == "384.50"
    with Journal(journal_path(alice.path)) as journal:
        fundings = journal.fundings()
    assert [(f.amount, f.state) for f in fundings] == [(50_000, ACCEPTED), (2_000_000, ACCEPTED), (5_000, ACCEPTED)]


async def test_defund_and_the_system_audit(system, users):
    alice, _, _ = users
    done = await alice.run("defund", "84.50")
    assert done.stdout.startswith("defunded 84.50 to the deposit account")
    assert await alice.balance() == "300.00"
    history = (await alice.run("history")).stdout
    assert "burn" in history and "-84.50" in history
    audit = await system.wait_converged()
    assert audit.ok
    assert parse_major(await alice.balance()) == 30_000


async def test_paying_over_the_payees_holding_limit_sends_the_excess_to_their_deposit(system, users, tmp_path):
    """On us, reverse waterfall: the transfer is refused for the payee's limit, so the wallet pays
    through the bank; the payee holds its limit in CBDC and the excess arrives in its deposit account."""
    alice, bob, _ = users
    dave = await new_wallet(tmp_path, "dave", "bank-a", system.services["bank-a"].url, tier="anonymous")
    await alice.run("fund", "10200.00")
    paid = await alice.run("pay", dave.address, "10200.00")
    assert f"paid 10200.00 to {dave.address} (on-us, through the bank" in paid.stdout, paid.stdout
    assert await dave.balance() == "10000.00" and await alice.balance() == "300.00"
    await dave.run("pay", bob.address, "200.00")          # room again; the 200.00 excess is in dave's deposit
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CREDIT_WAIT_SECONDS
    while (funded := await dave.run("fund", "200.00", ok=False)).returncode != 0:
        assert "[deposit_insufficient]" in funded.stderr and loop.time() < deadline, funded.stderr
        await asyncio.sleep(0.2)
    assert await dave.balance() == "10000.00"
    await dave.run("pay", bob.address, "0.01")
    one_line(await dave.run("fund", "0.01", ok=False), "[deposit_insufficient]")   # it was the excess, exactly
    audit = await system.wait_converged()
    assert audit.ok, audit.all_breaches
