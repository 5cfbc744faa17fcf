"""The wallet's errors: each a ``CBDCError`` with a stable code, shown to the user as one line.

    WalletError                    wallet_error
    ├── wallet codes               wallet_exists, wallet_not_found, wallet_file_invalid,
    │                              wallet_unlock_failed, password_too_short, passwords_differ,
    │                              phrase_invalid, account_exists, account_not_found, ...
    ├── CoinSelectionError         insufficient_funds, funds_reserved, too_many_inputs_needed
    ├── RequestError               request_malformed, request_signature_invalid, request_expired
    ├── JournalError               journal_invalid, journal_entry_not_found, journal_conflict
    └── (wallet.actions)           bank_refused (the bank's code in extra["refusal"], shown in plain
                                   words), outcome_unknown (saved as pending: run it again),
                                   bank_unreachable

Messages never carry key material, passwords or phrases.
"""
from __future__ import annotations

from shared.errors import Unprocessable


class WalletError(Unprocessable):
    code = "wallet_error"
    title = "Wallet error"


class CoinSelectionError(WalletError):
    code = "insufficient_funds"
    title = "Coin selection failed"


class RequestError(WalletError):
    code = "request_malformed"
    title = "Payment request refused"


class JournalError(WalletError):
    code = "journal_invalid"
    title = "Payment journal error"
