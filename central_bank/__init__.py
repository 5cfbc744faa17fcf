"""Tier 1: the central bank service (issuance, redemption, escrow, interbank settlement)."""
