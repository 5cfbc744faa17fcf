"""`cbdc-wallet`: the end user's command line.

Today it checks addresses; keys, balances and payments come with the wallet app.
"""
from __future__ import annotations

import argparse
import sys

from shared.address import decode_address
from shared.errors import CBDCError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cbdc-wallet", description="The CBDC end-user wallet.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = commands.add_parser(
        "check-address", help="check an address's checksum and show its bank and key",
        description="Check a receive address before paying to it: a typo fails the checksum.",
        epilog="example:\n  cbdc-wallet check-address bank-a1vma6n2wz3xt6sqlljfj6c5l5g8v437l70d02vvz2jdjxg53sudaqy2kamd",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    check.add_argument("address")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "check-address":
            address = decode_address(args.address)
            print(f"valid address: bank {address.ledger}, key {address.key.hex()}")
            return 0
    except CBDCError as exc:
        print(f"cbdc-wallet: {exc.detail}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
