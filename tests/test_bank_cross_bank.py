"""Cross-bank payments in process: two banks and the central bank (each its own database), the
payer signs an outbound at A, A settles at tier 1 and pushes the notice to B, B credits the payee
once. Also: refusal -> exactly one refund, 50 concurrent duplicate notices -> one credit, and the
notices and outbounds a payee bank must refuse. Every test ends with the system audit."""
from __future__ import annotations

import asyncio
import dataclasses

import orjson
import pytest

from commercial_bank.client import APIError, build_spend, coins_of
from shared.crypto import PrivateKey
from shared.notice import notice_from_json, notice_to_json, sign_notice
from shared.tx import Payee, encode_body, signed_to_json, tx_id_of
from tests.bank_harness import assert_system_consistent, start_bank, stop_bank, wait_until

MAJOR = 100


@pytest.fixture(scope="module")
async def banks(central_bank):
    a, b = await start_bank(central_bank, "xa"), await start_bank(central_bank, "xb")
    yield a, b
    await stop_bank(a)
    await stop_bank(b)


async def _pay(payer, payee_bank, payee_key: bytes, amount: int, payment_id: str):
    stx = await payer.spend("outbound", amount, payee=Payee(payee_bank.bank_id, payee_key, amount),
                            reference=payment_id)
    return stx, await payer.client.pay(stx)


async def _state(wallet, payment_id: str, *states: str):
    answer = await wallet.client.payment(payment_id)
    return answer if answer["state"] in states else None


async def test_a_cross_bank_payment_end_to_end(banks):
    a, b = banks
    alice = await a.funded_wallet(10_000)
    bob = await b.wallet("basic")
    pid = f"{a.bank_id}:p1"
    stx, accepted = await _pay(alice, b, bob.public_key, 2_500, pid)
    assert accepted["state"] in ("pending", "settled", "completed")
    done = await wait_until(lambda: _state(alice, pid, "completed"), "payment completed")
    assert done["settle_tx_id"] and await alice.client.balance() == 7_500
    static = ("payment_id", "amount", "payer", "payee_bank", "payee_key", "outbound_tx_id", "refund_tx_id")
    assert set(accepted) == set(done) | {"status"} and all(accepted[k] == done[k] for k in static)
    assert await bob.client.balance() == 2_500                      # the payee sees the coins at its own bank
    [entry] = await bob.client.history()
    assert entry["kind"] == "inbound" and entry["reference"] == f"in:{pid}"
    assert (await alice.client.pay(stx))["state"] == "completed"    # a resubmission answers the status
    cb = a.cb.operator()
    assert (await cb.payment(pid))["notice"]["reference"] == done["outbound_tx_id"]
    await assert_system_consistent(a.cb, [a, b])


async def test_refused_settlement_refunds_the_payer_exactly_once(banks):
    a, b = banks
    alice = await a.funded_wallet(5_000)
    bob = await b.wallet("basic")
    await _pay(alice, b, bob.public_key, 100, f"{a.bank_id}:warm")  # A caches B as active
    await wait_until(lambda: _state(alice, f"{a.bank_id}:warm", "completed"), "warm-up payment")
    await a.cb.operator().suspend_bank(b.bank_id)
    try:
        pid = f"{a.bank_id}:to-suspended"
        await _pay(alice, b, bob.public_key, 1_000, pid)
        refunded = await wait_until(lambda: _state(alice, pid, "refunded"), "refund")
        assert refunded["refusal_code"] == "payee_bank_suspended" and refunded["refund_tx_id"]
        assert await alice.client.balance() == 4_900
        kinds = [e["kind"] for e in await alice.client.history()]
        assert kinds.count("refund") == 1
        assert (await alice.client.wallet())["limits"]["used_today"] == 100   # the refund gives the limit back
    finally:
        await a.cb.operator().resume_bank(b.bank_id)
    await assert_system_consistent(a.cb, [a, b])


async def test_unknown_payee_bank_is_refused_before_any_value_moves(banks):
    a, _ = banks
    alice = await a.funded_wallet(1_000)
    with pytest.raises(APIError) as exc:
        await _pay(alice, dataclasses.make_dataclass("B", ["bank_id"])("bank-nowhere"),
                   PrivateKey.generate().public_key, 10, f"{a.bank_id}:lost")
    assert (exc.value.status, exc.value.code) == (422, "payee_bank_unknown")
    for reference, code in (("not-namespaced", "payment_id_invalid"), ("bank-zz:x", "payment_id_invalid")):
        with pytest.raises(APIError) as exc:
            await _pay(alice, a, PrivateKey.generate().public_key, 10, reference)
        assert exc.value.code == code
    assert await alice.client.balance() == 1_000
    await assert_system_consistent(a.cb, [a])


async def test_an_outbound_from_an_unregistered_key_is_refused_and_changes_nothing(banks):
    """The payer's record and the payment id are looked up together: no record, no payment."""
    a, b = banks
    alice = await a.funded_wallet(1_000)
    stranger = PrivateKey.generate()
    fake = [dataclasses.replace(c, owner=stranger.public_key) for c in await alice.coins()]   # real outpoints
    pid = f"{a.bank_id}:stranger"
    stx = build_spend(stranger, a.bank_id, "outbound", fake, amount=10,
                      payee=Payee(b.bank_id, PrivateKey.generate().public_key, 10), reference=pid)
    with pytest.raises(APIError) as exc:
        await alice.client.pay(stx)
    assert (exc.value.status, exc.value.code) == (404, "wallet_not_found")
    with pytest.raises(APIError) as exc:
        await alice.client.payment(pid)
    assert exc.value.code == "payment_not_found"
    assert await alice.client.balance() == 1_000
    await assert_system_consistent(a.cb, [a, b])


async def _settled_payment(a, b, amount: int, pid: str):
    """A payment settled at tier 1 (through A), with its notice and outbound, for B to be shown."""
    alice = await a.funded_wallet(amount * 2)
    bob = await b.wallet("full")
    stx, _ = await _pay(alice, b, bob.public_key, amount, pid)
    await wait_until(lambda: _state(alice, pid, "completed"), "payment completed")
    notice = (await a.cb.operator().payment(pid))["notice"]
    return alice, bob, notice, signed_to_json(stx)


async def test_fifty_concurrent_duplicate_notices_credit_once(banks):
    a, b = banks
    _, bob, notice, outbound = await _settled_payment(a, b, 300, f"{a.bank_id}:storm")
    anyone = b.client(None)
    answers = await asyncio.gather(*(anyone.inbound(notice, outbound) for _ in range(50)))
    assert {x["inbound_tx_id"] for x in answers} == {answers[0]["inbound_tx_id"]}
    assert await bob.client.balance() == 300 and answers.count(answers[0]) == 50
    await assert_system_consistent(a.cb, [a, b])


async def test_the_payee_bank_refuses_bad_notices_and_lying_payers(banks):
    a, b = banks
    pid = f"{a.bank_id}:lie"
    alice, bob, notice, outbound = await _settled_payment(a, b, 400, pid)
    anyone = b.client(None)
    mallory = PrivateKey.generate()
    n, signature = notice_from_json(notice)
    # A lies about whom to credit: a validly signed outbound of the same payer, same payment id and
    # amount, to mallory -- but not the one whose tx id the central bank signed into the notice
    coins = [c for c in coins_of(await alice.client.unspent())]
    lie = signed_to_json(build_spend(alice.key, a.bank_id, "outbound", coins, amount=400,
                                     payee=Payee(b.bank_id, mallory.public_key, 400), reference=pid)) \
        if coins else {**outbound, "payee": {**outbound["payee"], "owner": mallory.public_key.hex()}}
    tampered = {**outbound, "payee": {**outbound["payee"], "owner": mallory.public_key.hex()}}
    forged_notice = notice_to_json(dataclasses.replace(n, amount=4000), sign_notice(mallory, n))
    other_bank = notice_to_json(n, signature) | {"payee_bank": a.bank_id}
    cases = [
        ({"notice": notice, "outbound": lie}, "outbound_mismatch"),
        ({"notice": notice, "outbound": tampered}, "outbound_invalid"),   # the payer's signature breaks
        ({"notice": forged_notice, "outbound": outbound}, "notice_signature_invalid"),
        ({"notice": other_bank, "outbound": outbound}, "notice_signature_invalid"),
        ({"notice": {**notice, "amount": "400"}, "outbound": outbound}, "notice_invalid"),
        ({"notice": notice}, "field_missing"),
    ]
    for body, code in cases:
        status, problem = await anyone.raw("POST", "/v1/inbound", orjson.dumps(body))
        assert (status, problem["code"]) == (422, code), (code, problem)
    assert await bob.client.balance() == 400
    await assert_system_consistent(a.cb, [a, b])


async def test_payment_status_is_the_payers_only(banks):
    a, b = banks
    alice = await a.funded_wallet(500)
    bob = await b.wallet("basic")
    pid = f"{a.bank_id}:private"
    await _pay(alice, b, bob.public_key, 50, pid)
    eve = await a.wallet("basic")
    with pytest.raises(APIError) as exc:
        await eve.client.payment(pid)
    assert (exc.value.status, exc.value.code) == (404, "payment_not_found")
    await wait_until(lambda: _state(alice, pid, "completed"), "payment completed")
    await assert_system_consistent(a.cb, [a, b])


async def test_many_concurrent_payments_settle_netted_and_conserve(banks):
    """Payments accepted together are settled together (one tier-1 settle tx for those a pass finds
    pending): all complete, each credited once, and I3 holds for both banks."""
    a, b = banks
    payers = [await a.funded_wallet(1_000) for _ in range(6)]
    payees = [await b.wallet("basic") for _ in range(6)]
    ids = [f"{a.bank_id}:net-{n}" for n in range(6)]
    spends = [await p.spend("outbound", 100 + n, payee=Payee(b.bank_id, q.public_key, 100 + n), reference=pid)
              for n, (p, q, pid) in enumerate(zip(payers, payees, ids))]
    await asyncio.gather(*(p.client.pay(s) for p, s in zip(payers, spends)))
    done = [await wait_until(lambda p=p, pid=pid: _state(p, pid, "completed"), pid) for p, pid in zip(payers, ids)]
    settle_txs = {d["settle_tx_id"] for d in done}
    print(f"6 payments settled by {len(settle_txs)} tier-1 settle transaction(s)")
    assert 1 <= len(settle_txs) <= 6
    assert [await q.client.balance() for q in payees] == [100 + n for n in range(6)]
    await assert_system_consistent(a.cb, [a, b])


async def test_payee_limits_are_checked_at_the_payee_bank_before_any_value_moves(banks):
    a, b = banks
    alice = await a.funded_wallet(2_000_000)
    small = await b.wallet("anonymous", account=False)   # holds at most 10,000.00, no deposit account
    for payee_key, amount, status, code in ((small.public_key, 1_000_001, 409, "payee_holding_limit"),
                                            (PrivateKey.generate().public_key, 10, 422, "payee_unknown")):
        with pytest.raises(APIError) as exc:
            await _pay(alice, b, payee_key, amount, f"{a.bank_id}:limit-{code}")
        assert (exc.value.status, exc.value.code) == (status, code)
    assert await alice.client.balance() == 2_000_000
    # two payments that each fit but not together: the second is refused by the reservation
    await _pay(alice, b, small.public_key, 600_000, f"{a.bank_id}:fits-1")
    with pytest.raises(APIError) as exc:
        await _pay(alice, b, small.public_key, 400_001, f"{a.bank_id}:fits-2")
    assert exc.value.code == "payee_holding_limit"
    await wait_until(lambda: _state(alice, f"{a.bank_id}:fits-1", "completed"), "payment completed")
    assert await small.client.balance() == 600_000
    await assert_system_consistent(a.cb, [a, b])


async def test_reservations_are_signed_by_the_payer_bank(banks):
    a, b = banks
    body = orjson.dumps({"payment_id": f"{a.bank_id}:x", "payee_key": "00" * 32, "amount": 1})
    status, problem = await b.client(None).raw("POST", "/v1/reservations", body)
    assert (status, problem["code"]) == (401, "signature_missing")
    from shared.signing import sign_request
    forged = sign_request(PrivateKey.generate(), f"bank:{a.bank_id}", "POST", "/v1/reservations", body,
                          now=int(a.cb.clock()), ledger=b.bank_id)
    status, problem = await b.client(None).raw("POST", "/v1/reservations", body, headers=forged)
    assert (status, problem["code"]) == (401, "signature_invalid")


async def test_reverse_waterfall_sends_the_excess_to_the_payees_deposit_account(banks):
    """A payee with a linked deposit account receives what it may hold as coins; the rest leaves
    B's escrow at tier 1 (a defund) and arrives in the deposit account, once."""
    a, b = banks
    alice = await a.funded_wallet(2_000_000)
    saver = await b.wallet("anonymous", deposit=0, account=True)   # holds at most 1,000,000
    pid = f"{a.bank_id}:waterfall"
    await _pay(alice, b, saver.public_key, 1_500_000, pid)
    await wait_until(lambda: _state(alice, pid, "completed"), "payment completed")
    assert await saver.client.balance() == 1_000_000
    status = await wait_until(lambda: _defund_state(saver, f"waterfall:{pid}"), "waterfall credited")
    assert (status["kind"], status["amount"]) == ("waterfall", 500_000)
    assert (await saver.client.credit_deposit(1, "probe"))["balance"] == 500_001
    await assert_system_consistent(a.cb, [a, b])


async def _defund_state(wallet, defund_id: str):
    answer = await wallet.client.defund_status(defund_id)
    return answer if answer["state"] == "credited" else None


async def test_one_worker_settles_and_the_payee_bank_credits_a_batch_item_by_item(banks):
    """While another holder has A's settlement lock, A's loop settles nothing; notices pushed as one
    batch are each checked alone and credited once (a repeat in the batch is not fresh, a forged
    notice is refused on its own); when the lock is free, A settles and completes the payments."""
    from commercial_bank.recovery import SETTLEMENT_LOCK
    a, b = banks
    alice = await a.funded_wallet(5_000)
    bob = await b.wallet("full")
    async with a.pool.acquire() as held:
        await wait_until(lambda: held.fetchval("SELECT pg_try_advisory_lock($1)", SETTLEMENT_LOCK), "the lock")
        try:
            paid = {}
            for n, amount in ((1, 700), (2, 900)):
                pid = f"{a.bank_id}:batch-{n}"
                stx, answer = await _pay(alice, b, bob.public_key, amount, pid)
                assert answer["state"] == "pending"
                paid[pid] = (amount, stx)
            await asyncio.sleep(1.5)   # more than a recovery interval: still nothing settled
            assert [(await alice.client.payment(pid))["state"] for pid in paid] == ["pending", "pending"]
            as_a = a.cb.client(a.key, f"bank:{a.bank_id}")   # settle as A's worker would, then push by hand
            items = [{"notice": await as_a.settle(pid, a.bank_id, b.bank_id, amount,
                                                  reference=tx_id_of(encode_body(stx.body))),
                      "outbound": signed_to_json(stx)} for pid, (amount, stx) in paid.items()]
            n, _ = notice_from_json(items[0]["notice"])
            forged = {**items[0], "notice": notice_to_json(n, sign_notice(PrivateKey.generate(), n))}
            body = orjson.dumps({"items": [items[0], items[0], forged, items[1]]})
            status, answer = await b.client(None).raw("POST", "/v1/inbound/batch", body)
            assert status == 200, answer
            r = answer["results"]
            assert [x.get("fresh") for x in r] == [True, False, None, True]
            assert r[0] == {**r[1], "fresh": True} and r[2]["code"] == "notice_signature_invalid"
            assert await bob.client.balance() == 1_600
        finally:
            await held.fetchval("SELECT pg_advisory_unlock($1)", SETTLEMENT_LOCK)
    for pid in paid:
        await wait_until(lambda: _state(alice, pid, "completed"), "payment completed")
    assert await bob.client.balance() == 1_600
    await assert_system_consistent(a.cb, [a, b])


async def test_reservations_in_a_batch_are_answered_item_by_item(banks):
    a, b = banks
    small = await b.wallet("anonymous", account=False)        # holds at most 1,000,000 (10,000.00)
    from shared.signing import sign_request
    items = [{"payment_id": f"{a.bank_id}:r1", "payee_key": small.public_key.hex(), "amount": 600_000},
             {"payment_id": f"{a.bank_id}:r1", "payee_key": small.public_key.hex(), "amount": 600_000},
             {"payment_id": f"{a.bank_id}:r2", "payee_key": small.public_key.hex(), "amount": 400_001},
             {"payment_id": f"{a.bank_id}:r3", "payee_key": PrivateKey.generate().public_key.hex(), "amount": 1},
             {"payment_id": "elsewhere:r4", "payee_key": small.public_key.hex(), "amount": 1},
             {"payment_id": f"{a.bank_id}:r1", "payee_key": small.public_key.hex(), "amount": 5},
             {"payment_id": f"{a.bank_id}:r5", "payee_key": small.public_key.hex(), "amount": 400_000}]
    body = orjson.dumps({"reservations": items})
    status, problem = await b.client(None).raw("POST", "/v1/reservations/batch", body)
    assert (status, problem["code"]) == (401, "signature_missing")
    headers = sign_request(a.key, f"bank:{a.bank_id}", "POST", "/v1/reservations/batch", body,
                           now=int(a.cb.clock()), ledger=b.bank_id)
    status, answer = await b.client(None).raw("POST", "/v1/reservations/batch", body, headers=headers)
    assert status == 200, answer
    r = answer["results"]
    assert [x.get("fresh", x.get("code")) for x in r] == [
        True, False, "payee_holding_limit", "payee_unknown", "payment_id_invalid", "payment_conflict", True]
    assert (r[0]["as_coins"], r[6]["as_coins"]) == (600_000, 400_000)


async def test_a_credit_releases_its_reservation_and_expired_ones_are_swept(banks):
    """A reservation counts against the payee's limit until its payment is credited: then it is gone
    (the limit checks never sum more than the payments in flight); a reservation asked for again
    after the credit is refused; an expired one is deleted by the recovery loop."""
    a, b = banks
    alice = await a.funded_wallet(10_000)
    bob = await b.wallet("full")
    pid = f"{a.bank_id}:released"
    await _pay(alice, b, bob.public_key, 1_000, pid)
    await wait_until(lambda: _state(alice, pid, "completed"), "payment completed")
    assert await b.pool.fetchval("SELECT count(*) FROM bank_reservations WHERE payment_id = $1", pid) == 0
    from shared.signing import sign_request
    body = orjson.dumps({"reservations": [{"payment_id": pid, "payee_key": bob.public_key.hex(), "amount": 1_000}]})
    headers = sign_request(a.key, f"bank:{a.bank_id}", "POST", "/v1/reservations/batch", body,
                           now=int(a.cb.clock()), ledger=b.bank_id)
    status, answer = await b.client(None).raw("POST", "/v1/reservations/batch", body, headers=headers)
    assert status == 200 and answer["results"][0]["code"] == "payment_credited", answer
    assert await b.pool.fetchval("SELECT count(*) FROM bank_reservations WHERE payment_id = $1", pid) == 0
    now = int(a.cb.clock())
    await b.pool.execute("INSERT INTO bank_reservations (payment_id, payer_bank, payee_key, amount, room, created_at,"
                         " expires_at) VALUES ($1, $2, $3, 5, 5, $4, $4), ($5, $2, $3, 5, 5, $4, $6)",
                         f"{a.bank_id}:stale", a.bank_id, bob.public_key, now - 700, f"{a.bank_id}:open", now + 600)
    left = lambda: b.pool.fetchval("SELECT array_agg(payment_id) FROM bank_reservations WHERE payee_key = $1",
                                   bob.public_key)
    await wait_until(lambda: _only(left, [f"{a.bank_id}:open"]), "the expired reservation swept")
    await b.pool.execute("DELETE FROM bank_reservations WHERE payment_id = $1", f"{a.bank_id}:open")
    await assert_system_consistent(a.cb, [a, b])


async def _only(query, expected):
    return await query() == expected
