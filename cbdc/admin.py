"""The operator's verbs against the running system's central bank, signed with an operator key
from STATE_DIR/keys (the ones `cbdc up` generated)."""
from __future__ import annotations

import argparse
from typing import Any

from cbdc import state
from central_bank.client import CentralBankClient
from shared.amounts import format_major, parse_major


def _client(args: argparse.Namespace) -> CentralBankClient:
    system = state.read_system(args.state_dir)
    operator = getattr(args, "operator", None) or "op1"
    key = state.load_key(args.state_dir, operator)
    return CentralBankClient(system.central_bank.url, key, f"operator:{operator}")


def _proposal_line(p: dict[str, Any]) -> str:
    return (f"{p['proposal_id']}  {p['status']:<9} {format_major(p['amount']):>16} to {p['bank_id']:<12} "
            f"proposed by {p['proposed_by']}" + (f", decided by {p['decided_by']}" if p.get("decided_by") else ""))


async def bank(args: argparse.Namespace) -> int:
    async with _client(args) as cb:
        if args.action == "register":
            key = bytes.fromhex(args.public_key)
            b = await cb.register_bank(args.bank_id, args.name or args.bank_id, key, args.callback_url)
            print(f"registered {b['bank_id']} ({b['status']})")
        elif args.action in ("suspend", "resume"):
            b = await (cb.suspend_bank if args.action == "suspend" else cb.resume_bank)(args.bank_id)
            print(f"{b['bank_id']} is now {b['status']}")
        else:
            for b in await cb.list_banks():
                print(f"{b['bank_id']:<14} {b['status']:<10} {b['name']:<20} {b['callback_url']}")
    return 0


async def issue(args: argparse.Namespace) -> int:
    async with _client(args) as cb:
        if args.action == "propose":
            p = await cb.propose_issuance(args.bank_id, parse_major(args.amount), args.memo)
            print(f"proposed {p['proposal_id']}: {format_major(p['amount'])} to {p['bank_id']}; "
                  f"another operator must approve it (cbdc issue approve {p['proposal_id']} --operator op2)")
        elif args.action == "approve":
            p = await cb.approve_issuance(args.proposal_id)
            print(f"approved {p['proposal_id']}: {format_major(p['amount'])} issued to {p['bank_id']} "
                  f"(tier-1 tx {p['tx_id']})")
        elif args.action == "reject":
            p = await cb.reject_issuance(args.proposal_id)
            print(f"rejected {p['proposal_id']}")
        else:
            for p in (await cb.call("GET", "/v1/issuance"))["proposals"]:
                print(_proposal_line(p))
    return 0


async def supply(args: argparse.Namespace) -> int:
    async with _client(args) as cb:
        s = await cb.supply()
    for name in ("issued", "redeemed", "outstanding", "cap"):
        print(f"{name:<12} {format_major(s[name]):>20}")
    return 0


def add_commands(commands: argparse._SubParsersAction, state_dir_arg) -> None:
    raw = argparse.RawDescriptionHelpFormatter

    def leaf(actions: argparse._SubParsersAction, name: str, help_text: str) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=help_text, description=help_text)
        state_dir_arg(p)
        p.add_argument("--operator", default="op1", help="operator key to sign with (default op1)")
        return p

    p = commands.add_parser("bank", help="register, suspend, resume or list commercial banks",
                            formatter_class=raw, epilog="examples:\n"
                            "  cbdc bank list\n  cbdc bank suspend bank-b\n"
                            "  cbdc bank register bank-c --public-key <64 hex> --callback-url http://127.0.0.1:8473")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    r = leaf(actions, "register", "register a bank")
    r.add_argument("bank_id")
    r.add_argument("--name", default="")
    r.add_argument("--public-key", required=True, help="the bank's Ed25519 public key, hex")
    r.add_argument("--callback-url", required=True)
    for verb in ("suspend", "resume"):
        leaf(actions, verb, f"{verb} a bank").add_argument("bank_id")
    leaf(actions, "list", "list the registered banks")

    p = commands.add_parser("issue", help="propose, approve, reject or list issuance (maker-checker)",
                            formatter_class=raw, epilog="examples:\n"
                            "  cbdc issue propose bank-a 1000000.00 --operator op1\n"
                            "  cbdc issue approve <proposal id> --operator op2\n  cbdc issue list")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    r = leaf(actions, "propose", "propose issuing AMOUNT (major units) to a bank")
    r.add_argument("bank_id")
    r.add_argument("amount", help="major units, e.g. 1000000.00")
    r.add_argument("--memo", default="")
    for verb in ("approve", "reject"):
        leaf(actions, verb, f"{verb} a proposal (as an operator other than its proposer)").add_argument("proposal_id")
    leaf(actions, "list", "list proposals")

    p = commands.add_parser("supply", help="show issued, redeemed and outstanding supply and the cap",
                            formatter_class=raw, epilog="example:\n  cbdc supply")
    state_dir_arg(p)
    p.add_argument("--operator", default="op1", help="operator key to sign with (default op1)")
