"""Maker-checker issuance, the supply cap and the bank register, on the real service."""
from __future__ import annotations

import asyncio

import pytest

from central_bank.client import APIError
from tests.cb_harness import SUPPLY_CAP, assert_supply_invariant


async def test_issue_needs_a_second_operator_and_pays_the_bank_holdings(central_bank):
    bank = await central_bank.new_bank()
    proposal = await central_bank.operator("op1").propose_issuance(bank.bank_id, 5_000, "first")
    assert proposal["status"] == "pending" and proposal["proposed_by"] == "op1"
    with pytest.raises(APIError) as exc:
        await central_bank.operator("op1").approve_issuance(proposal["proposal_id"])
    assert (exc.value.status, exc.value.code) == (403, "approver_is_proposer")
    assert (await bank.client.balances(bank.bank_id))["holdings"] == 0
    approved = await central_bank.operator("op2").approve_issuance(proposal["proposal_id"])
    assert approved["status"] == "approved" and approved["decided_by"] == "op2" and approved["tx_id"]
    assert (await bank.client.balances(bank.bank_id))["holdings"] == 5_000
    tx = await central_bank.operator().transaction(bytes.fromhex(approved["tx_id"]))
    assert tx["transaction"]["kind"] == "issue"
    with pytest.raises(APIError) as exc:  # approving twice issues nothing more
        await central_bank.operator("op3").approve_issuance(proposal["proposal_id"])
    assert (exc.value.status, exc.value.code) == (409, "proposal_not_pending")
    await assert_supply_invariant(central_bank.pool)


async def test_rejected_and_expired_proposals_cannot_be_approved(central_bank):
    bank = await central_bank.new_bank()
    op1, op2 = central_bank.operator("op1"), central_bank.operator("op2")
    rejected = await op1.propose_issuance(bank.bank_id, 100)
    assert (await op2.reject_issuance(rejected["proposal_id"]))["status"] == "rejected"
    with pytest.raises(APIError) as exc:
        await op2.approve_issuance(rejected["proposal_id"])
    assert (exc.value.status, exc.value.code) == (409, "proposal_not_pending")

    expiring = await op1.propose_issuance(bank.bank_id, 100)
    central_bank.clock.offset += 601  # past the 600 s TTL (clients sign with the same clock)
    try:
        assert (await op2.proposal(expiring["proposal_id"]))["status"] == "expired"
        with pytest.raises(APIError) as exc:
            await op2.approve_issuance(expiring["proposal_id"])
        assert (exc.value.status, exc.value.code) == (409, "proposal_expired")
    finally:
        central_bank.clock.offset -= 601
    assert (await bank.client.balances(bank.bank_id))["holdings"] == 0
    await assert_supply_invariant(central_bank.pool)


async def test_supply_cap_holds_under_concurrent_approvals(central_bank):
    bank = await central_bank.new_bank()
    outstanding = (await central_bank.operator().supply())["outstanding"]
    room = SUPPLY_CAP - outstanding
    op1, op2 = central_bank.operator("op1"), central_bank.operator("op2")
    with pytest.raises(APIError) as exc:
        over = await op1.propose_issuance(bank.bank_id, room + 1)
        await op2.approve_issuance(over["proposal_id"])
    assert (exc.value.status, exc.value.code) == (409, "supply_cap_exceeded")
    # ten proposals of 30 % of the room each: at most three may be approved, however they race
    share = room * 3 // 10
    proposals = [await op1.propose_issuance(bank.bank_id, share) for _ in range(10)]
    results = await asyncio.gather(*(op2.approve_issuance(p["proposal_id"]) for p in proposals),
                                   return_exceptions=True)
    approved = [r for r in results if isinstance(r, dict)]
    refused = [r for r in results if isinstance(r, APIError)]
    assert len(approved) == 3 and len(refused) == 7
    assert {r.code for r in refused} == {"supply_cap_exceeded"}
    supply = await central_bank.operator().supply()
    assert supply["outstanding"] == outstanding + 3 * share <= supply["cap"] == SUPPLY_CAP
    await assert_supply_invariant(central_bank.pool)


async def test_register_suspend_resume(central_bank):
    bank = await central_bank.new_bank()
    operator = central_bank.operator()
    listed = {b["bank_id"]: b for b in await operator.list_banks(limit=500)}
    assert listed[bank.bank_id]["status"] == "active"
    assert listed[bank.bank_id]["public_key"] == bank.key.public_key.hex()
    with pytest.raises(APIError) as exc:
        await operator.register_bank(bank.bank_id, "again", bank.key.public_key, "http://127.0.0.1:9/")
    assert (exc.value.status, exc.value.code) == (409, "bank_exists")
    with pytest.raises(APIError) as exc:
        await operator.register_bank("bank-copycat", "copy", bank.key.public_key, "http://127.0.0.1:9/")
    assert (exc.value.status, exc.value.code) == (409, "public_key_in_use")

    assert (await operator.suspend_bank(bank.bank_id))["status"] == "suspended"
    with pytest.raises(APIError) as exc:
        await bank.client.balances(bank.bank_id)
    assert (exc.value.status, exc.value.code) == (403, "bank_suspended")
    with pytest.raises(APIError) as exc:
        await bank.client.settle(f"{bank.bank_id}:p-suspended", bank.bank_id, "bank-x", 1)
    assert (exc.value.status, exc.value.code) == (403, "bank_suspended")
    with pytest.raises(APIError) as exc:  # nor is new money issued to it
        await central_bank.issue(bank.bank_id, 10)
    assert (exc.value.status, exc.value.code) == (409, "bank_suspended")
    assert (await operator.resume_bank(bank.bank_id))["status"] == "active"
    assert (await bank.client.balances(bank.bank_id))["holdings"] == 0


@pytest.mark.parametrize("field, value, code", [
    ("bank_id", "CB", "bank_id_invalid"),
    ("bank_id", "cb", "bank_id_invalid"),
    ("public_key", "00" * 32, "public_key_invalid"),             # a small-order point
    ("public_key", "zz", "public_key_invalid"),
    ("callback_url", "ftp://127.0.0.1/", "field_invalid"),
    ("name", "", "field_invalid"),
])
async def test_registration_refuses_bad_fields(central_bank, field, value, code):
    body = {"bank_id": "bank-fine", "name": "Fine", "public_key": central_bank.operator().key.public_key.hex(),
            "callback_url": "http://127.0.0.1:9/"}
    body[field] = value
    with pytest.raises(APIError) as exc:
        await central_bank.operator().call("POST", "/v1/banks", body)
    assert (exc.value.status, exc.value.code, exc.value.problem["field"]) == (422, code, field)
