"""`cbdc-wallet`: the end user's command line.

Commands that need no bank: create, restore, accounts, address, request, check-address. The
bank-facing ones (register, balance, history, pay, status, fund, defund, serve) talk to the account's
bank at ``--bank-url URL``, else ``$CBDC_WALLET_BANK_URL``, else the URL stored with the account
(``create --bank-url``, ``accounts add NAME --bank B --bank-url URL``, ``accounts set-url``). Amounts are major units with two decimals here (minor units inside). Every error is one
line on stderr (``cbdc-wallet: ...``), exit status 1; nothing is printed to stdout on failure.

The wallet file is ``--wallet PATH``, else ``$CBDC_WALLET_FILE``, else ~/.cbdc-wallet/wallet.dat.
The password comes from ``--password-file FILE``, else ``$CBDC_WALLET_PASSWORD``, else a prompt.
"""
from __future__ import annotations

import argparse
import getpass
import os
import re
import sys
import time
from pathlib import Path

from shared.address import decode_address
from shared.amounts import format_major, parse_major
from shared.errors import CBDCError
from wallet.errors import WalletError
from wallet.keystore import Keystore, check_password, phrase_to_entropy
from wallet.requests import make_request, write_qr_svg
from wallet import cli_bank

DEFAULT_WALLET = Path("~/.cbdc-wallet/wallet.dat")
PASSWORD_ENV = "CBDC_WALLET_PASSWORD"
WALLET_ENV = "CBDC_WALLET_FILE"
EXPIRES_IN_DEFAULT = "24h"
EXPIRES_IN_SECONDS_MAX = 366 * 86400
_DURATION_RE = re.compile(r"([0-9]{1,8})([smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_ADDRESS_EXAMPLE = "bank-a1vma6n2wz3xt6sqlljfj6c5l5g8v437l70d02vvz2jdjxg53sudaqy2kamd"


# ---------------------------------------------------------------------------------------------
# parser

def _common(nested: bool = False) -> argparse.ArgumentParser:
    """--wallet and --password-file, accepted after any command (nested: do not reset the outer value)."""
    default = argparse.SUPPRESS if nested else None
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--wallet", metavar="PATH", type=Path, default=default,
                        help=f"the wallet file (default: ${WALLET_ENV}, else {DEFAULT_WALLET})")
    common.add_argument("--password-file", metavar="FILE", type=Path, default=default,
                        help=f"read the password from FILE (default: ${PASSWORD_ENV}, else a prompt)")
    return common


def _command(commands, name: str, help_text: str, example: str, parents=()) -> argparse.ArgumentParser:
    return commands.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".",
                               epilog="example:\n  " + example.replace("\n", "\n  "), parents=list(parents),
                               formatter_class=argparse.RawDescriptionHelpFormatter)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cbdc-wallet", description="The CBDC end-user wallet: your keys, your payment requests.",
        epilog="example:\n  cbdc-wallet create --bank bank-a\n  cbdc-wallet request 12.50 --memo 'lunch'",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = [_common()]
    create = _command(commands, "create", "create a wallet with one account and show its backup phrase once",
                      "cbdc-wallet create --bank bank-a\n"
                      "CBDC_WALLET_PASSWORD=... cbdc-wallet create --bank bank-a --wallet ./alice.dat", common)
    create.add_argument("--bank", required=True, metavar="BANK_ID", help="the bank of the first account")
    create.add_argument("--name", default="main", help="the first account's name (default: main)")
    create.add_argument("--bank-url", default="", metavar="URL", help="where the bank answers (stored with the account)")
    restore = _command(commands, "restore", "rebuild a wallet from its backup phrase (same keys)",
                       "cbdc-wallet restore --bank bank-a          (then type the 24 words)\n"
                       "cbdc-wallet restore --bank bank-a --phrase-file words.txt", common)
    restore.add_argument("--bank", required=True, metavar="BANK_ID", help="the bank of the first account")
    restore.add_argument("--name", default="main", help="the first account's name (default: main)")
    restore.add_argument("--bank-url", default="", metavar="URL", help="where the bank answers (stored with the account)")
    restore.add_argument("--phrase-file", metavar="FILE", type=Path, help="read the phrase from FILE")
    accounts = _command(commands, "accounts", "list the wallet's accounts, or add one",
                        "cbdc-wallet accounts\ncbdc-wallet accounts add savings --bank bank-b", common)
    accounts_commands = accounts.add_subparsers(dest="accounts_command", metavar="ACTION")
    nested = [_common(nested=True)]
    _command(accounts_commands, "list", "list the accounts", "cbdc-wallet accounts list", nested)
    add = _command(accounts_commands, "add", "add an account (its key comes from the backup phrase)",
                   "cbdc-wallet accounts add savings --bank bank-b", nested)
    add.add_argument("name", metavar="NAME")
    add.add_argument("--bank", required=True, metavar="BANK_ID")
    add.add_argument("--bank-url", default="", metavar="URL", help="where the bank answers (stored with the account)")
    set_url = _command(accounts_commands, "set-url", "store where an account's bank answers ('' to forget it)",
                       "cbdc-wallet accounts set-url main http://127.0.0.1:8480", nested)
    set_url.add_argument("name", metavar="NAME")
    set_url.add_argument("url", metavar="URL")
    address = _command(commands, "address", "show an account's receive address",
                       "cbdc-wallet address\ncbdc-wallet address savings", common)
    address.add_argument("account", nargs="?", metavar="ACCOUNT", help="account name (default: the first)")
    request = _command(commands, "request", "make a signed payment request (and its QR code) to receive money",
                       "cbdc-wallet request 12.50 --memo 'invoice 7' --expires-in 2h --qr invoice.svg", common)
    request.add_argument("amount", metavar="AMOUNT", help="major units, e.g. 12.50")
    request.add_argument("--account", metavar="NAME", help="the receiving account (default: the first)")
    request.add_argument("--memo", default="", help="a note for the payer (at most 140 characters)")
    request.add_argument("--expires-in", default=EXPIRES_IN_DEFAULT, metavar="DURATION",
                         help=f"e.g. 30m, 2h, 7d; 0 for never (default: {EXPIRES_IN_DEFAULT})")
    request.add_argument("--qr", metavar="FILE.svg", type=Path, help="also write the request as a QR code")
    check = _command(commands, "check-address", "check an address's checksum and show its bank and key",
                     f"cbdc-wallet check-address {_ADDRESS_EXAMPLE}")
    check.add_argument("address")
    cli_bank.add_commands(commands, _command, common)
    return parser


# ---------------------------------------------------------------------------------------------
# inputs: wallet path, password, phrase, durations

def wallet_path(args: argparse.Namespace) -> Path:
    return (args.wallet or Path(os.environ.get(WALLET_ENV) or DEFAULT_WALLET)).expanduser()


def read_password(args: argparse.Namespace, *, confirm: bool = False) -> str:
    if args.password_file is not None:
        try:
            lines = args.password_file.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise WalletError(f"{args.password_file} is not UTF-8 text", code="password_unreadable") from None
        except OSError as exc:
            raise WalletError(f"cannot read {args.password_file}: {exc.strerror}", code="password_unreadable") from None
        return lines[0] if lines else ""
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    password = _prompt("Wallet password: ")
    if confirm:
        check_password(password)
        if _prompt("Repeat the password: ") != password:
            raise WalletError("the two passwords differ", code="passwords_differ")
    return password


def _prompt(text: str) -> str:
    """A password from the terminal without echo, or one line of stdin when it is not a terminal."""
    if sys.stdin.isatty():
        return getpass.getpass(text)
    line = sys.stdin.readline()
    if not line:
        raise WalletError(f"no password given (use a terminal, --password-file or ${PASSWORD_ENV})",
                          code="password_missing")
    return line.rstrip("\r\n")


def read_phrase(args: argparse.Namespace) -> str:
    if args.phrase_file is not None:
        try:
            return args.phrase_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise WalletError(f"cannot read {args.phrase_file}: {getattr(exc, 'strerror', None) or 'not text'}",
                              code="phrase_unreadable") from None
    if sys.stdin.isatty():
        print("Backup phrase (the words separated by spaces): ", end="", file=sys.stderr, flush=True)
    return sys.stdin.readline()


def parse_duration(text: str) -> int:
    match = _DURATION_RE.fullmatch(text.strip())
    seconds = int(match[1]) * _UNIT_SECONDS[match[2]] if match else -1
    if not 0 <= seconds <= EXPIRES_IN_SECONDS_MAX:
        raise WalletError(f"not a duration: {text!r} (e.g. 30m, 2h, 7d, or 0 for never; at most 366d)",
                          code="duration_invalid")
    return seconds


def unlock(args: argparse.Namespace) -> Keystore:
    path = wallet_path(args)
    if not path.exists():  # before asking for a password that cannot help
        raise WalletError(f"no wallet at {path} (create one: cbdc-wallet create --bank BANK_ID)",
                          code="wallet_not_found")
    return Keystore.open(path, read_password(args))


# ---------------------------------------------------------------------------------------------
# commands

def cmd_create(args: argparse.Namespace, phrase: str | None = None) -> int:
    path = wallet_path(args)
    if path.exists():
        raise WalletError(f"a wallet already exists at {path}", code="wallet_exists")
    password = read_password(args, confirm=True)
    store = Keystore.create(path, password, bank=args.bank, name=args.name, phrase=phrase,
                            bank_url=args.bank_url)
    account = store.account()
    print(f"{'restored' if phrase else 'created'} wallet {path}")
    print(f"account {account.name} at {account.bank}: {account.address}")
    if phrase is None:
        print("\nBackup phrase: write these 24 words down, in order, and keep them secret.\n"
              "Anyone with them can spend your money; without them a lost wallet file is lost money.\n"
              "They are shown only this once.\n")
        print("  " + store.backup_phrase())
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    phrase = read_phrase(args)
    if not phrase.strip():
        raise WalletError("no backup phrase given", code="phrase_invalid")
    phrase_to_entropy(phrase)  # a bad phrase fails before the password prompt
    return cmd_create(args, phrase=phrase)


def cmd_accounts(args: argparse.Namespace) -> int:
    store = unlock(args)
    if args.accounts_command == "add":
        account = store.add_account(args.name, args.bank, args.bank_url)
        print(f"added account {account.name} at {account.bank}: {account.address}")
        return 0
    if args.accounts_command == "set-url":
        account = store.set_bank_url(args.name, args.url)
        print(f"account {account.name} at {account.bank}: bank URL {account.bank_url or '(none)'}")
        return 0
    for account in store.accounts:
        print(f"{account.name}\t{account.bank}\t{account.address}" + (f"\t{account.bank_url}" if account.bank_url else ""))
    return 0


def cmd_address(args: argparse.Namespace) -> int:
    print(unlock(args).account(args.account).address)
    return 0


def cmd_request(args: argparse.Namespace) -> int:
    amount = parse_major(args.amount)
    expires_in = parse_duration(args.expires_in)
    store = unlock(args)
    account = store.account(args.account)
    expires = int(time.time()) + expires_in if expires_in else 0
    uri = make_request(store, account, amount, memo=args.memo, expires=expires)
    if args.qr is not None:
        write_qr_svg(uri, args.qr)
    print(uri)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(expires)) if expires else "never"
    print(f"request for {format_major(amount)} to {account.name} ({account.bank}), expires {when}"
          + (f"; QR code in {args.qr}" if args.qr else ""), file=sys.stderr)
    return 0


def cmd_check_address(args: argparse.Namespace) -> int:
    address = decode_address(args.address)
    print(f"valid address: bank {address.ledger}, key {address.key.hex()}")
    return 0


COMMANDS = {"create": cmd_create, "restore": cmd_restore, "accounts": cmd_accounts, "address": cmd_address,
            "request": cmd_request, "check-address": cmd_check_address}
COMMANDS.update({name: (lambda args, run=run: run(args, unlock)) for name, run in cli_bank.COMMANDS.items()})


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except CBDCError as exc:
        print(f"cbdc-wallet: {exc.detail}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, EOFError):
        print("\ncbdc-wallet: cancelled", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
