"""Well-known tier-1 account owners both tiers (and the system audit) must agree on."""
from __future__ import annotations

from shared.crypto import sha256


def escrow_owner(bank_id: str) -> bytes:
    """The non-key owner of a bank's escrow outputs at tier 1: sha256("cbdc/escrow/" + bank id)."""
    return sha256(b"cbdc/escrow/" + bank_id.encode("ascii"))
