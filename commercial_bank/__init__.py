"""Tier 2: a commercial bank service (wallets, limits, funding, on-us and cross-bank payments)."""
