"""A batch of 1,000 transactions with double spends, bad signatures and duplicates mixed in:
every good one commits, exactly the bad ones are refused, and the ledger stays consistent."""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace

from shared.errors import ValidationFailed
from shared.tx import Witness
from shared.validation import sign, validate_many
from tests.ledger_fixtures import NOW, RULES, coins, keys, mint, transfer
from tests.ledger_invariants import assert_ledger_consistent

GOOD, DOUBLE, BAD_SIG, DUPLICATE = 700, 100, 100, 100


async def test_mixed_batch_of_1000(engine, pool):
    rng = random.Random(20261122)
    print(f"seed 20261122")
    owners = keys(20)
    payees = keys(5)
    funding = [mint(o, [10] * 60) for o in owners]          # 1,200 coins of 10
    assert all(r.code == "created" for r in await engine.apply(funding))
    pool_of_coins = {o.public_key: coins(f) for o, f in zip(owners, funding)}
    by_key = {o.public_key: o for o in owners}

    good, spare = [], []
    for n in range(GOOD):
        owner = owners[n % len(owners)]
        c = pool_of_coins[owner.public_key]
        good.append(transfer(owner, [c.pop(), c.pop()] if n < 400 else [c.pop()], rng.choice(payees).public_key,
                             5, reference=f"good-{n}"))
    for owner in owners:
        spare += [(owner, coin) for coin in pool_of_coins[owner.public_key]]
    # double spends: one input of an earlier good tx plus one untouched coin of the same owner
    doubles = []
    for n in range(DOUBLE):
        victim = good[n * 7]
        owner = by_key[victim.body.inputs[0].owner]
        fresh = next(c for o, c in spare if o is owner and c not in {i for d in doubles for i in d.body.inputs})
        doubles.append(transfer(owner, [victim.body.inputs[0], fresh], payees[0].public_key, 1,
                                reference=f"double-{n}"))
    bad_sigs = []
    for n in range(BAD_SIG):
        owner, coin = spare[-1 - n]
        stx = sign(transfer(owner, [coin], payees[1].public_key, 3, reference=f"bad-{n}").body, owner)
        w = stx.witnesses[0]
        bad_sigs.append(replace(stx, witnesses=(Witness(w.key, bytes([w.signature[0] ^ 1]) + w.signature[1:]),)))
    duplicates = [good[n * 3] for n in range(DUPLICATE)]

    # order: good ones first in random order, then every conflicting/duplicate one after its original
    entries = [("good", g) for g in good]
    rng.shuffle(entries)
    later = [("double", d) for d in doubles] + [("dup", d) for d in duplicates] + [("bad_sig", b) for b in bad_sigs]
    rng.shuffle(later)
    entries += later
    assert len(entries) == 1000

    signed = [sign(e.body, by_key[e.body.inputs[0].owner]) if kind != "bad_sig" else e for kind, e in entries]
    checked = validate_many(signed, RULES, NOW)
    rejected = [n for n, c in enumerate(checked) if isinstance(c, ValidationFailed)]
    assert {entries[n][0] for n in rejected} == {"bad_sig"} and len(rejected) == BAD_SIG
    assert all(checked[n].code == "signature_invalid" for n in rejected)

    valid_positions = [n for n, c in enumerate(checked) if not isinstance(c, ValidationFailed)]
    results = await engine.apply([checked[n] for n in valid_positions])
    outcome = Counter((entries[n][0], r.code) for n, r in zip(valid_positions, results))
    assert outcome == Counter({("good", "created"): GOOD, ("dup", "exists"): DUPLICATE,
                               ("double", "input_already_spent"): DOUBLE})

    # every payee holds exactly what the good transfers sent; the doubles' fresh coins are still there
    sent = Counter()
    for g in good:
        sent[g.body.outputs[0].owner] += g.body.outputs[0].amount
    for p in payees:
        assert await engine.balance(p.public_key) == sent[p.public_key]
    for d in doubles:
        assert await engine.output(d.body.inputs[1].tx_id, d.body.inputs[1].index) is not None
    audit = await assert_ledger_consistent(pool)
    assert audit.by_kind["transfer"] == GOOD
