"""A bank's refusal in plain words: stable problem codes -> one sentence for the user.

The CLI and the page both show ``explain(code, detail)``; unknown codes fall back to the bank's own
``detail``. The code is kept in brackets at the end, so support can look it up.
"""
from __future__ import annotations

SENTENCES = {
    # limits (KYC tiers)
    "limit_per_payment": "the amount is over your per-payment limit for your KYC tier",
    "limit_daily": "this payment would take you over your daily spending limit; try a smaller amount or wait until tomorrow",
    "limit_holding": "your wallet cannot hold that much: it would go over the holding limit of your KYC tier",
    "payee_holding_limit": "the payee's wallet cannot receive that much: it would go over their holding limit",
    "payee_is_payer": "a wallet does not pay itself",
    # money
    "insufficient_funds": "you do not have enough money in this wallet for that",
    "funds_reserved": "part of your money is held by payments still pending; wait for them to finish",
    "deposit_insufficient": "your linked deposit account does not have enough money for that",
    "no_deposit_account": "this wallet has no linked deposit account (register with --deposit-account)",
    "input_already_spent": "some of the coins used were already spent by another payment; check your balance and try again",
    "input_not_found": "some of the coins used are not known to the bank (already spent?); check your balance and try again",
    "input_contended": "the bank is busy with another payment using the same coins; try again in a moment",
    "transaction_expired": "the payment expired before the bank accepted it",
    # parties
    "wallet_not_found": "this wallet is not registered at the bank yet (run: cbdc-wallet register)",
    "wallet_exists": "this wallet is already registered at the bank",
    "payer_unknown": "this wallet is not registered at the bank yet (run: cbdc-wallet register)",
    "payee_unknown": "the payee's bank does not know that wallet (check the address)",
    "payee_bank_unknown": "the payee's bank is not a registered bank",
    "payee_bank_suspended": "the payee's bank is suspended at the central bank; payments to it are refused",
    "payee_bank_unavailable": "the payee's bank is not answering right now; try again later",
    "bank_suspended": "your bank is suspended at the central bank",
    "kyc_tier_unknown": "the bank does not offer that KYC tier (e.g. anonymous, basic, full)",
    "wrong_ledger": "the transaction is for another bank",
    # requests
    "signature_invalid": "the bank did not accept the request's signature",
    "timestamp_stale": "the bank refused the request's time: check this computer's clock",
    "nonce_reused": "the bank saw this request before (a replay); try again",
    "rate_limited": "the bank is limiting requests; wait a moment and try again",
    "ledger_busy": "the bank is busy; try again in a moment",
    "escrow_insufficient": "the bank cannot cover this at the central bank right now; try again later",
    "bank_holdings_insufficient": "the bank cannot issue that much digital currency right now; try again later",
    "funding_conflict": "this funding id was used for another amount",
    "defund_conflict": "this defund id was used for another amount",
    "payment_not_found": "the bank knows no payment with that id (for this wallet)",
}


def explain(code: str | None, detail: str | None = None) -> str:
    """One sentence (no trailing period) naming the refusal in plain words, with its code."""
    sentence = SENTENCES.get(code or "") or (detail or "the bank refused without a reason")
    return f"{sentence} [{code}]" if code else sentence
