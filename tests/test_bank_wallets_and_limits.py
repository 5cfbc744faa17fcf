"""A commercial bank in process (real create_app, real central bank, real PostgreSQL): onboarding,
wallet-signed reads, KYC limits and on-us transfers; every money-moving test ends with the system audit."""
from __future__ import annotations

import asyncio

import pytest

from commercial_bank.client import APIError, build_spend, coins_of
from shared.crypto import PrivateKey
from shared.signing import NONCE, sign_request
from shared import db
from shared.tx import Output, Payee, Tx
from shared.validation import sign
from tests.bank_harness import assert_system_consistent, start_bank, stop_bank, wait_until

MAJOR = 100


@pytest.fixture(scope="module")
async def bank(central_bank):
    b = await start_bank(central_bank, "wl", holdings=8_000_000)
    yield b
    await stop_bank(b)


async def _refused(call, status: int, code: str) -> dict:
    with pytest.raises(APIError) as exc:
        await call
    assert (exc.value.status, exc.value.code) == (status, code), exc.value.problem
    return exc.value.problem


async def test_onboarding_and_signed_reads(bank):
    w = await bank.wallet("basic", account=True)
    record = await w.client.wallet()
    assert record["kyc_tier"] == "basic" and record["balance"] == 0
    assert record["limits"]["per_payment"] == 5_000 * MAJOR and record["limits"]["holding"] == 20_000 * MAJOR
    await _refused(w.client.register("Again", "basic"), 409, "wallet_exists")
    stranger = bank.client(PrivateKey.generate())
    await _refused(stranger.register("X", "platinum"), 422, "kyc_tier_unknown")
    await _refused(stranger.register("\x00", "basic"), 422, "field_invalid")
    # reads are the wallet's own, signed, fresh, for this bank
    status, problem = await bank.client(None).raw("GET", f"/v1/wallets/{w.client.me}")
    assert (status, problem["code"]) == (401, "signature_missing")
    status, problem = await stranger.raw("GET", f"/v1/wallets/{w.client.me}")
    assert (status, problem["code"]) == (403, "not_permitted")
    path = f"/v1/wallets/{w.client.me}"
    headers = w.client.signed_headers("GET", path, b"")
    assert (await w.client.raw("GET", path, headers=headers))[0] == 200
    status, problem = await w.client.raw("GET", path, headers=headers)
    assert (status, problem["code"]) == (401, "nonce_reused")
    other_bank = w.client.signed_headers("GET", path, b"")
    forged = sign_request(w.key, f"wallet:{w.client.me}", "GET", path, b"", now=int(bank.cb.clock()),
                          ledger="bank-elsewhere")
    status, problem = await w.client.raw("GET", path, headers=forged)
    assert (status, problem["code"]) == (401, "signature_invalid")
    status, _ = await w.client.raw("GET", path, headers={**other_bank, NONCE: "ab" * 16})
    assert status == 401
    await _refused(bank.client(PrivateKey.generate()).wallet(), 404, "wallet_not_found")


async def test_funding_and_defunding_move_deposit_escrow_and_coins_once(bank):
    cb_client = bank.cb.operator()
    escrow_before = (await cb_client.balances(bank.bank_id))["escrow"]
    w = await bank.wallet("full", deposit=30_000)
    first = await w.client.fund("f-1", 20_000)
    assert first["state"] == "minted"
    assert await w.client.fund("f-1", 20_000) == first                       # a retry: same answer
    await _refused(w.client.fund("f-1", 20_001), 409, "funding_conflict")
    await _refused(w.client.fund("f-2", 10_001), 409, "deposit_insufficient")
    assert await w.client.balance() == 20_000
    assert (await cb_client.balances(bank.bank_id))["escrow"] == escrow_before + 20_000
    burn = build_spend(w.key, bank.bank_id, "burn", await _coins(w), amount=7_000, reference="d-1")
    done = await w.client.defund(burn)
    assert done["state"] == "credited" and done["amount"] == 7_000
    assert await w.client.defund(burn) == done
    assert await w.client.balance() == 13_000
    assert (await w.client.credit_deposit(1, "probe"))["balance"] == 30_000 - 20_000 + 7_000 + 1
    assert (await cb_client.balances(bank.bank_id))["escrow"] == escrow_before + 13_000
    history = await w.client.history()
    assert [e["kind"] for e in history] == ["mint", "burn"] and [e["change"] for e in history] == [20_000, -7_000]
    receipt = await w.client.receipt(history[1]["tx_id"])
    assert receipt["transaction"]["kind"] == "burn" and receipt["reference"] == "d-1"
    await assert_system_consistent(bank.cb, [bank])


async def _coins(w):
    return coins_of(await w.client.unspent())


def _outcome(answer):
    """A funding's state, or its refusal as (status, code); any other exception as it is."""
    if isinstance(answer, APIError):
        return answer.status, answer.code
    return answer if isinstance(answer, BaseException) else answer["state"]


async def test_concurrent_fundings_share_db_transactions_and_tier1_txs_each_checked_alone(bank):
    """Fundings sent together are recorded in shared DB transactions and paid for at tier 1 by shared
    fund txs (fewer txs than fundings), while each is still refused on its own: a short deposit, a
    holding limit, a reused id with another amount -- and the others all mint, once."""
    cb_client = bank.cb.operator()
    escrow_before = (await cb_client.balances(bank.bank_id))["escrow"]
    wallets = [await bank.wallet("full", deposit=5_000) for _ in range(24)]
    short = await bank.wallet("full", deposit=100)
    small = await bank.wallet("anonymous", deposit=20_000 * MAJOR)
    twin = await bank.wallet("full", deposit=5_000)
    calls = [w.client.fund(f"group-{n}", 1_000 + n) for n, w in enumerate(wallets)]
    calls += [short.client.fund("group-short", 101), small.client.fund("group-small", 10_001 * MAJOR)]
    # One id sent twice with two amounts: whichever arrives first mints, the other is a conflict.
    calls += [twin.client.fund("group-twin", 500), twin.client.fund("group-twin", 7)]
    answers = [_outcome(a) for a in await asyncio.gather(*calls, return_exceptions=True)]
    assert answers[:24] == ["minted"] * 24, answers
    assert answers[24:26] == [(409, "deposit_insufficient"), (409, "limit_holding")], answers
    pair = answers[26:]
    assert sorted(pair, key=str) == [(409, "funding_conflict"), "minted"], pair
    winner = [amount for amount, a in zip((500, 7), pair) if a == "minted"]
    assert [await w.client.balance() for w in wallets] == [1_000 + n for n in range(24)]
    assert await twin.client.balance() == winner[0]
    assert (await cb_client.balances(bank.bank_id))["escrow"] == (
        escrow_before + sum(1_000 + n for n in range(24)) + winner[0])
    ids = [f"group-{n}" for n in range(24)]
    txs = await bank.pool.fetchval("SELECT count(DISTINCT fund_tx_id) FROM bank_fundings WHERE funding_id = ANY($1)",
                                   ids)
    assert 1 <= txs < 24
    assert [await w.client.balance() for w in (short, small)] == [0, 0]
    assert (await short.client.credit_deposit(1, "probe"))["balance"] == 101   # nothing debited
    assert [a["state"] for a in await asyncio.gather(*(w.client.fund(f"group-{n}", 1_000 + n)
                                                      for n, w in enumerate(wallets)))] == ["minted"] * 24
    await assert_system_consistent(bank.cb, [bank])


async def test_holding_limit_refuses_funding(bank):
    w = await bank.wallet("anonymous", deposit=20_000 * MAJOR)
    assert (await w.client.fund("a-1", 9_000 * MAJOR))["state"] == "minted"
    await _refused(w.client.fund("a-2", 1_001 * MAJOR), 409, "limit_holding")
    assert (await w.client.wallet())["limits"]["room_to_hold"] == 1_000 * MAJOR


async def test_on_us_transfers_and_every_limit(bank):
    alice = await bank.funded_wallet(9_000 * MAJOR, tier="anonymous")
    bob = await bank.wallet("anonymous")
    carol = await bank.wallet("full")
    client = alice.client
    ok = await alice.spend("transfer", 1_500 * MAJOR, to=bob.public_key)
    assert (await client.transfer(ok))["result"] == "created"
    assert (await client.transfer(ok))["result"] == "exists"          # a resubmission is not a second payment
    assert await bob.client.balance() == 1_500 * MAJOR
    await _refused(client.transfer(await alice.spend("transfer", 2_001 * MAJOR, to=carol.public_key)), 422,
                   "limit_per_payment")
    await client.transfer(await alice.spend("transfer", 2_000 * MAJOR, to=carol.public_key))
    await _refused(client.transfer(await alice.spend("transfer", 1_501 * MAJOR, to=carol.public_key)), 409,
                   "limit_daily")                                     # 1,500 + 2,000 + 1,501 > 5,000
    await _refused(client.transfer(await carol.spend("transfer", 1 * MAJOR, to=PrivateKey.generate().public_key)),
                   422, "payee_unknown")
    rich = await bank.funded_wallet(20_000 * MAJOR)
    await _refused(rich.client.transfer(await rich.spend("transfer", 8_501 * MAJOR, to=bob.public_key)), 409,
                   "payee_holding_limit")                             # bob holds 1,500 of 10,000
    # spending another wallet's coins, another ledger, a double spend
    coins = await _coins(bob)
    theft = sign(Tx(bank.bank_id, "transfer", tuple(coins), (Output(carol.public_key, 1_500 * MAJOR),)), carol.key)
    await _refused(client.transfer(theft), 422, "witness_unexpected")   # carol cannot sign for bob's coins
    elsewhere = build_spend(bob.key, "bank-elsewhere", "transfer", coins, amount=10, to=carol.public_key)
    await _refused(client.transfer(elsewhere), 422, "wrong_ledger")
    first = build_spend(bob.key, bank.bank_id, "transfer", coins, amount=10, to=carol.public_key)
    second = build_spend(bob.key, bank.bank_id, "transfer", coins, amount=11, to=carol.public_key)
    await client.transfer(first)
    await _refused(client.transfer(second), 409, "input_already_spent")
    metrics = await (await client.session.get(bank.url + "/metrics")).text()
    assert 'cbdc_bank_limit_refusals_total{reason="limit_daily"}' in metrics
    assert "cbdc_bank_issued_minor_units" in metrics and "cbdc_bank_escrow_minor_units" in metrics
    await assert_system_consistent(bank.cb, [bank])


async def test_concurrent_payments_cannot_together_break_the_daily_limit(bank):
    alice = await bank.funded_wallet(9_000 * MAJOR, tier="anonymous")
    payees = [await bank.wallet("full") for _ in range(5)]
    coins = await _coins(alice)
    assert len(coins) == 1
    # five transfers of 1,500 spending distinct outputs: first split the coin
    split = sign(Tx(bank.bank_id, "transfer", tuple(coins), tuple(Output(alice.public_key, 1_800 * MAJOR)
                                                                  for _ in range(5))), alice.key)
    await alice.client.transfer(split)
    coins = await _coins(alice)
    spends = [build_spend(alice.key, bank.bank_id, "transfer", [c], amount=1_500 * MAJOR, to=p.public_key)
              for c, p in zip(coins, payees)]
    answers = await asyncio.gather(*(alice.client.transfer(s) for s in spends), return_exceptions=True)
    created = [a for a in answers if isinstance(a, dict)]
    refused = [a for a in answers if isinstance(a, APIError)]
    assert len(created) == 3 and {e.code for e in refused} == {"limit_daily"}, answers   # 3 x 1,500 <= 5,000
    assert (await alice.client.wallet())["limits"]["used_today"] == 4_500 * MAJOR
    await assert_system_consistent(bank.cb, [bank])


@pytest.mark.parametrize("body, status, code", [
    (b"{not json", 400, "malformed_json"),
    (b"[]", 422, "wrong_type"),
    (b'{"version": 1}', 422, "field_missing"),
    (b'{"version": 1, "ledger": "x", "kind": "transfer", "inputs": [], "outputs": [], "extra": 1}', 422,
     "unknown_field"),
])
async def test_malformed_spends_are_problem_json(bank, body, status, code):
    got, problem = await bank.client(None).raw("POST", "/v1/transfers", body)
    assert (got, problem["code"]) == (status, code)


async def test_open_endpoints(bank):
    c = bank.client(None)
    for path in ("/healthz", "/readyz"):
        assert (await c.raw("GET", path))[0] == 200
    status, document = await c.raw("GET", "/openapi.json")
    assert status == 200 and document["openapi"] == "3.1.0"
    routes = {r.resource.canonical for r in bank.server.app.router.routes()}
    assert routes == set(document["paths"])


def test_settings_fail_loudly_and_mask_secrets():
    from commercial_bank.settings import load
    from shared.errors import ConfigError
    from tests.bank_harness import environment
    env = environment("http://127.0.0.1:1", "postgresql://u:pw@127.0.0.1/x", "bank-q", bytes(32), "db_q")
    settings = load(env)
    assert "pw@" not in repr(settings) and bytes(32).hex() not in repr(settings)
    tiers = settings.tiers()
    assert (tiers["anonymous"].per_payment, tiers["anonymous"].daily, tiers["anonymous"].holding) == \
        (2_000 * MAJOR, 5_000 * MAJOR, 10_000 * MAJOR)
    assert (tiers["full"].per_payment, tiers["full"].daily, tiers["full"].holding) == \
        (50_000 * MAJOR, 100_000 * MAJOR, 500_000 * MAJOR)
    for name, value in (("CBDC_BANK_ID", "cb"), ("CBDC_BANK_ID", "Bank A"), ("CBDC_BANK_KYC_TIERS", "x:1/2"),
                        ("CBDC_BANK_KYC_TIERS", "a:0/1/1"), ("CBDC_BANK_CENTRAL_BANK_KEY", "00" * 32),
                        ("CBDC_BANK_SIGNING_SEED", "abc"), ("CBDC_BANK_CENTRAL_BANK_URL", "ftp://x")):
        with pytest.raises(ConfigError):
            load({**env, name: value})
    assert load({**env, "CBDC_BANK_DATABASE_NAME": ""}).database == "cbdc_bank_bank_q"


async def test_history_is_paginated_by_seq_and_receipts_are_the_wallets_own(bank):
    alice = await bank.funded_wallet(1_000)
    bob = await bank.wallet("full")
    for n in range(3):
        await alice.client.transfer(await alice.spend("transfer", 10 + n, to=bob.public_key))
    entries = await alice.client.history()
    assert [e["kind"] for e in entries] == ["mint", "transfer", "transfer", "transfer"]
    assert [e["change"] for e in entries] == [1_000, -10, -11, -12]
    page, after = [], 0
    for _ in range(10):   # bounded
        chunk = await alice.client.history(after_seq=after, limit=1)
        if not chunk:
            break
        page += chunk
        after = chunk[-1]["seq"]
    assert page == entries
    assert [e["change"] for e in await bob.client.history()] == [10, 11, 12]
    receipt = await bob.client.receipt(entries[1]["tx_id"])
    assert receipt["change"] == 10 and receipt["counterparty"] == alice.client.me
    stranger = await bank.wallet("basic")
    with pytest.raises(APIError) as exc:
        await stranger.client.receipt(entries[1]["tx_id"])
    assert exc.value.code == "receipt_not_found"
    await assert_system_consistent(bank.cb, [bank])


async def test_on_us_payment_over_the_payees_limit_sends_the_excess_to_its_deposit_account(bank):
    """Reverse waterfall on us: a transfer cannot pay a payee over its holding limit, but an outbound
    naming this bank pays it through the bank -- coins up to the payee's room, the excess to its
    linked deposit account (a tier-1 defund of the escrow, then the deposit credit), all or nothing."""
    alice = await bank.funded_wallet(15_000 * MAJOR)
    saver = await bank.wallet("anonymous", account=True)            # holds at most 10,000
    await alice.client.transfer(await alice.spend("transfer", 4_000 * MAJOR, to=saver.public_key))
    await _refused(alice.client.transfer(await alice.spend("transfer", 8_000 * MAJOR, to=saver.public_key)), 409,
                   "payee_holding_limit")
    pid = f"{bank.bank_id}:onus-waterfall"
    stx = await alice.spend("outbound", 8_000 * MAJOR, payee=Payee(bank.bank_id, saver.public_key, 8_000 * MAJOR),
                            reference=pid)
    answer = await alice.client.pay(stx)
    assert (answer["status"], answer["state"], answer["settle_tx_id"]) == ("created", "completed", None)
    assert await saver.client.balance() == 10_000 * MAJOR
    assert await alice.client.balance() == 3_000 * MAJOR
    credit = [e for e in await saver.client.history() if e["kind"] == "inbound"]
    assert [(e["change"], e["reference"]) for e in credit] == [(6_000 * MAJOR, f"in:{pid}")]
    waterfall = await wait_until(lambda: _credited(saver, f"waterfall:{pid}"), "the waterfall credited")
    assert (waterfall["kind"], waterfall["amount"]) == ("waterfall", 2_000 * MAJOR)
    assert (await saver.client.credit_deposit(1, "probe"))["balance"] == 2_000 * MAJOR + 1
    again = await alice.client.pay(stx)                                   # a resubmission: the status, nothing more
    assert (again["status"], again["state"]) == ("exists", "completed")
    assert (await alice.client.wallet())["limits"]["used_today"] == 12_000 * MAJOR
    await assert_system_consistent(bank.cb, [bank])


async def test_on_us_payment_through_the_bank_is_refused_before_any_value_moves(bank):
    alice = await bank.funded_wallet(10_500 * MAJOR)
    plain = await bank.wallet("anonymous", account=False)           # no deposit account: no waterfall
    outsider = PrivateKey.generate().public_key

    async def pay(to: bytes, amount: int, name: str):
        stx = await alice.spend("outbound", amount, payee=Payee(bank.bank_id, to, amount),
                                reference=f"{bank.bank_id}:{name}")
        return await alice.client.pay(stx)

    await _refused(pay(plain.public_key, 10_000 * MAJOR + 1, "too-much"), 409, "payee_holding_limit")
    await _refused(pay(outsider, 100, "nobody"), 422, "payee_unknown")
    await _refused(pay(alice.public_key, 100, "myself"), 422, "payee_is_payer")
    assert await alice.client.balance() == 10_500 * MAJOR and await plain.client.balance() == 0
    fits = await pay(plain.public_key, 10_000 * MAJOR, "fits")          # exactly the room: all of it as coins
    assert fits["state"] == "completed" and await plain.client.balance() == 10_000 * MAJOR
    await _refused(plain.client.defund_status(f"waterfall:{bank.bank_id}:fits"), 404, "defund_not_found")
    await assert_system_consistent(bank.cb, [bank])


async def test_the_audit_requires_an_on_us_payment_to_be_credited_in_the_same_step(bank):
    from shared.system_audit import audit_system
    alice = await bank.funded_wallet(1_000 * MAJOR)
    bob = await bank.wallet("full")
    pid = f"{bank.bank_id}:audited"
    await alice.client.pay(await alice.spend("outbound", 300 * MAJOR, payee=Payee(bank.bank_id, bob.public_key,
                                                                                  300 * MAJOR), reference=pid))
    await assert_system_consistent(bank.cb, [bank])
    cb_url = db.database_url(bank.cb.pg_server, bank.cb.database_name)
    await bank.pool.execute("UPDATE bank_payments SET state = 'pending' WHERE payment_id = $1", pid)
    try:
        audit = await audit_system(cb_url, {bank.bank_id: bank.database_url})
    finally:
        await bank.pool.execute("UPDATE bank_payments SET state = 'completed' WHERE payment_id = $1", pid)
    assert audit.breaches == [f"I5 payment {pid}: on-us at {bank.bank_id}, but not completed and credited as one step"]
    await assert_system_consistent(bank.cb, [bank])


async def _credited(wallet, defund_id: str):
    answer = await wallet.client.defund_status(defund_id)
    return answer if answer["state"] == "credited" else None


async def test_running_totals_follow_the_rows_and_the_audit_recomputes_them(bank):
    """held / out_day / out_today are kept by triggers in the statements that change the outputs and
    the activity; a statement spanning midnight counts the latest day only; a drift is a breach."""
    from shared.system_audit import audit_system
    alice = await bank.funded_wallet(1_000 * MAJOR)
    bob = await bank.wallet("full")
    await alice.client.transfer(await alice.spend("transfer", 300 * MAJOR, to=bob.public_key))
    select = "SELECT held, out_day, out_today FROM bank_wallet_totals WHERE wallet = $1"
    now = int(bank.cb.clock())
    today = now - now % 86_400
    assert tuple(await bank.pool.fetchrow(select, alice.public_key)) == (700 * MAJOR, today, 300 * MAJOR)
    assert tuple(await bank.pool.fetchrow(select, bob.public_key)) == (300 * MAJOR, 0, 0)
    insert = """INSERT INTO bank_activity (wallet, seq, tx_id, kind, delta, outgoing, counterparty, reference, at)
                SELECT $1, s, '\\x00'::bytea, 'probe', 0, o, '', '', t
                  FROM unnest($2::bigint[], $3::bigint[], $4::bigint[]) AS x(s, o, t)"""
    tomorrow = today + 86_400
    await bank.pool.execute(insert, bob.public_key, [-1, -2, -3], [5, 7, 11], [tomorrow - 1, tomorrow, tomorrow + 9])
    assert tuple(await bank.pool.fetchrow(select, bob.public_key)) == (300 * MAJOR, tomorrow, 18)
    await bank.pool.execute(insert, bob.public_key, [-4], [13], [today])          # an older day changes nothing
    assert tuple(await bank.pool.fetchrow(select, bob.public_key)) == (300 * MAJOR, tomorrow, 18)
    cb_url = db.database_url(bank.cb.pg_server, bank.cb.database_name)
    assert (await audit_system(cb_url, {bank.bank_id: bank.database_url})).ok
    await bank.pool.execute("UPDATE bank_wallet_totals SET held = held + 1 WHERE wallet = $1", bob.public_key)
    try:
        audit = await audit_system(cb_url, {bank.bank_id: bank.database_url})
    finally:
        await bank.pool.execute("UPDATE bank_wallet_totals SET held = held - 1 WHERE wallet = $1", bob.public_key)
    assert [b for b in audit.breaches if "running totals" in b] == [
        f"wallet {bob.public_key.hex()[:16]}… at {bank.bank_id}: running totals held {300 * MAJOR + 1} / out today 18 "
        f"!= its unspent outputs {300 * MAJOR} / its activity that day 18"]
    await assert_system_consistent(bank.cb, [bank])
