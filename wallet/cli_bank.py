"""`cbdc-wallet`'s bank-facing commands: register, balance, history, pay, status, fund, defund, serve.

Each unlocks the wallet, opens the payment journal beside it, and talks to the account's bank
through ``wallet.bank.WalletBank`` (requests signed inside the keystore). The work itself is in
``wallet.actions``, shared with the page (``wallet.server``). Output goes to stdout; every failure
is one line on stderr (``cbdc-wallet: ...``, exit status 1), the bank's refusal named in plain words.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import time
from contextlib import asynccontextmanager
from typing import Any, Callable

from shared.amounts import format_major, parse_major
from wallet import actions
from wallet.bank import TIMEOUT_SECONDS, WalletBank
from wallet.errors import WalletError
from wallet.journal import Journal, journal_path
from wallet.keystore import Account, Keystore, check_bank_url
from wallet.refusals import explain

BANK_URL_ENV = "CBDC_WALLET_BANK_URL"
TIMEOUT_ENV = "CBDC_WALLET_TIMEOUT_SECONDS"
WAIT_SECONDS_DEFAULT = 15.0
WAIT_SECONDS_MAX = 600.0
HISTORY_LIMIT_MAX = 500
KYC_TIERS = ("anonymous", "basic", "full")
SERVE_PORT_DEFAULT = 8765
_ADDRESS = "bank-b1...  (an address, or a cbdc:... payment request)"


def _bank_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--account", metavar="NAME", help="which account (default: the first)")
    options.add_argument("--bank-url", metavar="URL",
                         help=f"the bank's URL (default: ${BANK_URL_ENV}, else the one stored with the account)")
    options.add_argument("--timeout", type=float, metavar="SECONDS",
                         help=f"per-request timeout (default: ${TIMEOUT_ENV}, else {TIMEOUT_SECONDS:g})")
    return options


def add_commands(commands, command: Callable, common: list) -> None:
    parents = common + [_bank_options()]
    register = command(commands, "register", "register the account's key at its bank (once), with a KYC tier",
                       "cbdc-wallet register --tier basic --deposit-account --demo-deposit 500.00\n"
                       "cbdc-wallet register --account savings --bank-url http://127.0.0.1:8481", parents)
    register.add_argument("--name", help="the customer name the bank records (default: the account name)")
    register.add_argument("--tier", default="basic", choices=KYC_TIERS, help="KYC tier (default: basic)")
    register.add_argument("--deposit-account", action="store_true",
                          help="link a deposit account (needed to fund and defund)")
    register.add_argument("--demo-deposit", metavar="AMOUNT",
                          help="demo only: have the bank credit AMOUNT to the linked deposit account (once)")
    command(commands, "balance", "show the account's balance and limits at its bank",
            "cbdc-wallet balance\ncbdc-wallet balance --account savings", parents)
    history = command(commands, "history", "show the account's history at its bank, oldest first, a page at a time",
                      "cbdc-wallet history\ncbdc-wallet history --after 40 --limit 20", parents)
    history.add_argument("--after", type=int, default=0, metavar="SEQ", help="entries after this sequence number")
    history.add_argument("--limit", type=int, default=20, metavar="N", help=f"page size, 1..{HISTORY_LIMIT_MAX}")
    pay = command(commands, "pay", "pay an address or a payment request (same bank: transfer; else cross-bank)",
                  "cbdc-wallet pay bank-b1qx...  12.50\n"
                  "cbdc-wallet pay 'cbdc:bank-a1...?amount=12.50&sig=...'\n"
                  "(after a timeout, run the same command again: the saved payment is re-sent, paid once)", parents)
    pay.add_argument("payee", metavar="PAYEE", help=_ADDRESS)
    pay.add_argument("amount", nargs="?", metavar="AMOUNT", help="major units, e.g. 12.50 (optional for a request)")
    pay.add_argument("--memo", default="", help="a note for an on-us payment (at most 140 characters)")
    pay.add_argument("--wait", type=float, default=WAIT_SECONDS_DEFAULT, metavar="SECONDS",
                     help=f"cross-bank: wait up to SECONDS for the payee to be credited (default {WAIT_SECONDS_DEFAULT:g})")
    status = command(commands, "status", "show a payment's status: a cross-bank payment id or a transaction id",
                     "cbdc-wallet status bank-a:3f2c9e0d11aa4b7c\ncbdc-wallet status 5be1...(64 hex digits)", parents)
    status.add_argument("ident", metavar="PAYMENT_ID")
    fund = command(commands, "fund", "move money from the linked deposit account into the wallet (CBDC)",
                   "cbdc-wallet fund 100.00\n(after a timeout, run it again: the saved funding id is re-sent)", parents)
    fund.add_argument("amount", metavar="AMOUNT", help="major units, e.g. 100.00")
    defund = command(commands, "defund", "move money from the wallet back to the linked deposit account",
                     "cbdc-wallet defund 25.00", parents)
    defund.add_argument("amount", metavar="AMOUNT", help="major units, e.g. 25.00")
    serve = command(commands, "serve", "serve the wallet page on 127.0.0.1 (open the printed URL once)",
                    "cbdc-wallet serve --port 8765\n"
                    "cbdc-wallet serve --password-file pw.txt --bank-url http://127.0.0.1:8480",
                    parents)
    serve.add_argument("--port", type=int, default=SERVE_PORT_DEFAULT, help=f"(default {SERVE_PORT_DEFAULT}; 0 = any free port)")


# ---------------------------------------------------------------------------------------------
# context

def bank_url(args: argparse.Namespace, account: Account) -> str:
    url = args.bank_url or os.environ.get(BANK_URL_ENV) or account.bank_url
    if not url:
        raise WalletError(f"no URL for {account.bank}: pass --bank-url, set ${BANK_URL_ENV}, or store one with "
                          f"cbdc-wallet accounts set-url {account.name} URL", code="bank_url_missing")
    check_bank_url(url.rstrip("/"))
    return url.rstrip("/")


def timeout_seconds(args: argparse.Namespace) -> float:
    raw = args.timeout if args.timeout is not None else os.environ.get(TIMEOUT_ENV) or TIMEOUT_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.1 <= value <= 300:
        raise WalletError(f"a timeout is 0.1..300 seconds, not {raw!r}", code="timeout_invalid")
    return value


@asynccontextmanager
async def opened(args: argparse.Namespace, store: Keystore):
    account = store.account(args.account)
    url, timeout = bank_url(args, account), timeout_seconds(args)
    journal = Journal(journal_path(store.path))
    bank = WalletBank(url, store, account, timeout_seconds=timeout)
    try:
        yield actions.Context(store, account, journal, bank)
    finally:
        await bank.close()
        journal.close()


def _run(args: argparse.Namespace, unlock: Callable, work) -> int:
    store = unlock(args)

    async def main() -> int:
        async with opened(args, store) as ctx:
            return await work(ctx)
    return asyncio.run(main())


# ---------------------------------------------------------------------------------------------
# commands

def cmd_register(args: argparse.Namespace, unlock: Callable) -> int:
    demo = parse_major(args.demo_deposit) if args.demo_deposit else 0
    if demo and not args.deposit_account:
        raise WalletError("--demo-deposit needs --deposit-account", code="no_deposit_account")

    async def work(ctx: actions.Context) -> int:
        record, fresh = await actions.register(ctx, args.name or ctx.account.name, args.tier,
                                               deposit_account=args.deposit_account, demo_deposit=demo)
        state = "registered" if fresh else "already registered"
        deposit = "with a linked deposit account" if record.get("deposit_account") else "without a deposit account"
        print(f"{ctx.account.name}: {state} at {ctx.account.bank} as {record['kyc_tier']}, {deposit}")
        if "deposit_balance" in record:
            print(f"deposit account balance {format_major(record['deposit_balance'])}")
        return 0
    return _run(args, unlock, work)


def cmd_balance(args: argparse.Namespace, unlock: Callable) -> int:
    async def work(ctx: actions.Context) -> int:
        info = await actions.summary(ctx)
        limits = info["limits"]
        print(f"{format_major(info['balance'])}  ({ctx.account.name} at {ctx.account.bank})")
        print(f"tier {limits['kyc_tier']}: up to {format_major(limits['per_payment'])} a payment, "
              f"{format_major(limits['remaining_today'])} left today, room to receive {format_major(limits['room_to_hold'])}")
        if info["pending_payments"] or info["pending_fundings"]:
            print(f"pending in the journal: {info['pending_payments']} payment(s), {info['pending_fundings']} funding(s)"
                  " (run the same pay/fund/defund again to finish them)")
        return 0
    return _run(args, unlock, work)


def format_entry(entry: dict[str, Any]) -> str:
    at = entry.get("at")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at)) if isinstance(at, (int, float)) else str(at or "")
    change = entry["change"]
    sign = "+" if change > 0 else ""
    other = entry.get("counterparty") or ""
    ref = entry.get("reference") or ""
    amount = f"{sign}{format_major(change)}"
    return f"{entry['seq']:>6}  {when}  {entry['kind']:<9} {amount:>12}  {other[:24]}  {ref}".rstrip()


def cmd_history(args: argparse.Namespace, unlock: Callable) -> int:
    if not 1 <= args.limit <= HISTORY_LIMIT_MAX or args.after < 0:
        raise WalletError(f"--limit is 1..{HISTORY_LIMIT_MAX} and --after is not negative", code="query_invalid")

    async def work(ctx: actions.Context) -> int:
        entries = await actions.history(ctx, args.after, args.limit)
        for entry in entries:
            print(format_entry(entry))
        if not entries:
            print("(no entries)" if args.after == 0 else "(no more entries)")
        elif len(entries) == args.limit:
            print(f"(more: cbdc-wallet history --after {entries[-1]['seq']} --limit {args.limit})")
        return 0
    return _run(args, unlock, work)


def cmd_pay(args: argparse.Namespace, unlock: Callable) -> int:
    amount = parse_major(args.amount) if args.amount else None
    if not 0 <= args.wait <= WAIT_SECONDS_MAX:
        raise WalletError(f"--wait is 0..{WAIT_SECONDS_MAX:g} seconds", code="wait_invalid")

    async def work(ctx: actions.Context) -> int:
        result = await actions.pay(ctx, args.payee, amount, args.memo)
        again = " (re-sent the saved payment; the bank already had it)" if result.answer.get("status") == "exists" \
            else (" (re-sent the saved payment)" if result.retried else "")
        if result.kind == "transfer":
            print(f"paid {format_major(result.amount)} to {result.payee} (on-us), tx {result.tx_id}{again}")
            return 0
        if result.through_bank:
            print(f"paid {format_major(result.amount)} to {result.payee} (on-us, through the bank: what the payee may "
                  f"not hold goes to their deposit account), payment {result.payment_id}{again}")
            return 0
        print(f"sent {format_major(result.amount)} to {result.payee} (cross-bank), payment {result.payment_id}{again}")
        state = await actions.wait_payment(ctx, result.payment_id, args.wait) if args.wait else result.answer
        print(actions.describe_payment(state))
        return 0
    return _run(args, unlock, work)


def cmd_status(args: argparse.Namespace, unlock: Callable) -> int:
    async def work(ctx: actions.Context) -> int:
        info = await actions.status(ctx, args.ident)
        if "journal" in info:
            j = info["journal"]
            print(f"transaction {j['tx_id']} ({j['kind']}): {j['state']} after {j['attempts']} attempt(s)")
            if j["state"] == "rejected" and j["result"]:
                print(f"refused: {explain(j['result'].get('code'), j['result'].get('detail'))}")
        if "receipt" in info:
            r = info["receipt"]
            print(f"receipt: seq {r['seq']}, {r['kind']} {format_major(r['change'])}, accepted {r['accepted_at']}")
        if "payment" in info:
            print(actions.describe_payment(info["payment"]))
        return 0
    return _run(args, unlock, work)


def cmd_fund(args: argparse.Namespace, unlock: Callable) -> int:
    amount = parse_major(args.amount)

    async def work(ctx: actions.Context) -> int:
        answer, resumed = await actions.fund(ctx, amount)
        note = " (resumed the pending funding)" if resumed else ""
        if answer["state"] == "minted":
            print(f"funded {format_major(amount)} from the deposit account, funding {answer['funding_id']}{note}")
        else:
            print(f"funding {answer['funding_id']} of {format_major(amount)} is {answer['state']}: the bank is "
                  f"finishing it{note}; run the same command again to see it done")
        return 0
    return _run(args, unlock, work)


def cmd_defund(args: argparse.Namespace, unlock: Callable) -> int:
    amount = parse_major(args.amount)

    async def work(ctx: actions.Context) -> int:
        answer, retried = await actions.defund(ctx, amount)
        note = " (re-sent the saved defund)" if retried else ""
        if answer.get("state") == "credited":
            print(f"defunded {format_major(amount)} to the deposit account, defund {answer.get('defund_id')}{note}")
        else:
            print(f"defund {answer.get('defund_id')} of {format_major(amount)} is {answer.get('state')}: "
                  f"the bank is finishing it{note}")
        return 0
    return _run(args, unlock, work)


def cmd_serve(args: argparse.Namespace, unlock: Callable) -> int:
    from wallet import server

    if not 0 <= args.port <= 65535:
        raise WalletError("--port is 0..65535", code="port_invalid")
    store = unlock(args)
    account = store.account(args.account)
    return server.run(store, account, bank_url(args, account), timeout_seconds(args), args.port)


COMMANDS = {"register": cmd_register, "balance": cmd_balance, "history": cmd_history, "pay": cmd_pay,
            "status": cmd_status, "fund": cmd_fund, "defund": cmd_defund, "serve": cmd_serve}
