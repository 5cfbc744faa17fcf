"""The keystore: the wallet's Ed25519 keys in one password-encrypted file.

The only module that touches private keys. Everything else asks it to sign (``sign_tx``,
``sign_message``) and sees public keys only.

Keys. A wallet holds one BIP-39 secret (256 bits of entropy = a 24-word backup phrase). The
master seed is BIP-39's ``PBKDF2-HMAC-SHA512(phrase, "mnemonic", 2048)``; account ``i``'s
Ed25519 seed is ``HKDF-SHA512(master seed, salt="cbdc-wallet/v1/account", info=u32 i)``, 32
bytes. Restoring from the phrase reproduces every account's key; the derivation is pinned by a
test vector (tests/test_wallet_keystore.py), so it never silently changes.

File format, version 1 (all integers unsigned big-endian)::

    7B  magic "CBDCWAL"
    u8  format version = 1
    u8  KDF id = 1 (scrypt)
    u8  log2(N)        scrypt cost; 10..20
    u8  r              scrypt block size; 1..16
    u8  p              scrypt parallelism; 1..4
    16B salt
    12B nonce          AES-GCM nonce, fresh on every save
    ..  ciphertext     AES-256-GCM(key = scrypt(password, salt, N, r, p), nonce,
                                   plaintext = JSON {entropy, accounts},
                                   associated data = the 40 header bytes above) || 16B tag

The header (format version and KDF parameters included) is the AES-GCM associated data, so a
changed parameter fails authentication like a changed ciphertext byte: a wrong password and a
damaged file are both refused with ``wallet_unlock_failed`` and nothing is decrypted. Parameters
are bounded before the KDF runs, so a damaged header cannot make unlocking take gigabytes.
The file is written atomically (a 0600 temp file in the same directory, fsync, rename).
"""
from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from mnemonic import Mnemonic

from shared import crypto
from shared.address import encode_address
from shared.signing import sign_request
from shared.tx import LEDGER_ID_RE, SignedTx, Tx
from shared.validation import sign as sign_body
from wallet.errors import WalletError

MAGIC = b"CBDCWAL"
FORMAT_VERSION = 1
KDF_SCRYPT = 1
_HEADER = struct.Struct(">7sBBBBB16s12s")
HEADER_BYTES = _HEADER.size  # 40
TAG_BYTES = 16
ENTROPY_BYTES = 32           # a 24-word phrase
PASSWORD_CHARS_MIN = 8
ACCOUNT_NAME_CHARS_MAX = 32
ACCOUNTS_MAX = 1000
FILE_BYTES_MAX = 1 << 20
SCRYPT_MEMORY_BYTES_MAX = 128 << 20
DERIVATION_SALT = b"cbdc-wallet/v1/account"
BANK_URL_CHARS_MAX = 200
BANK_URL_RE = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+(/[A-Za-z0-9._~\-/]*)?")
# Purposes the keystore signs for besides spends: a payment request names its payee's key.
PURPOSE_PAYMENT_REQUEST = b"payment-request"
_MESSAGE_PURPOSES = {PURPOSE_PAYMENT_REQUEST}
_MNEMONIC = Mnemonic("english")


@dataclass(frozen=True, slots=True)
class KDFParams:
    """scrypt cost. N = 2**15 unlocks in about 0.13 s on the 2-core reference machine."""
    log2_n: int = 15
    r: int = 8
    p: int = 1

    def check(self) -> None:
        if not (10 <= self.log2_n <= 20 and 1 <= self.r <= 16 and 1 <= self.p <= 4
                and 128 * self.r * (1 << self.log2_n) <= SCRYPT_MEMORY_BYTES_MAX):
            raise WalletError("the wallet file's key-derivation parameters are out of range (damaged file?)",
                              code="wallet_file_invalid")


@dataclass(frozen=True, slots=True)
class Account:
    """One account: a name, the bank (ledger id) that holds its coins, and its key's public half."""
    name: str
    bank: str
    index: int
    public_key: bytes
    bank_url: str = ""   # where the bank answers ("" = not stored; the CLI takes --bank-url instead)

    @property
    def address(self) -> str:
        return encode_address(self.bank, self.public_key)


def _derive_aead(password: str, salt: bytes, params: KDFParams) -> AESGCM:
    params.check()
    kdf = Scrypt(salt=salt, length=32, n=1 << params.log2_n, r=params.r, p=params.p)
    return AESGCM(kdf.derive(password.encode("utf-8")))


def _account_seed(master_seed: bytes, index: int) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA512(), length=crypto.KEY_BYTES, salt=DERIVATION_SALT,
                info=index.to_bytes(4, "big"))
    return hkdf.derive(master_seed)


def phrase_to_entropy(phrase: str) -> bytes:
    """The entropy behind a backup phrase; ``phrase_invalid`` for unknown words or a bad checksum."""
    words = " ".join(phrase.lower().split())
    if len(words.split()) not in (12, 15, 18, 21, 24) or not _MNEMONIC.check(words):
        raise WalletError("the backup phrase is not valid (a misspelt word, a missing word, or the wrong order?)",
                          code="phrase_invalid")
    return bytes(_MNEMONIC.to_entropy(words))


def check_account(name: str, bank: str) -> None:
    if not (0 < len(name) <= ACCOUNT_NAME_CHARS_MAX and name.isprintable() and name.strip() == name):
        raise WalletError(f"an account name is 1..{ACCOUNT_NAME_CHARS_MAX} printable characters",
                          code="account_name_invalid")
    if not LEDGER_ID_RE.fullmatch(bank) or bank == "cb":
        raise WalletError(f"not a bank id: {bank!r} (e.g. bank-a)", code="bank_id_invalid")


def check_bank_url(url: str) -> None:
    """"" (none stored) or an http(s) URL without credentials, query or fragment."""
    if url and not (BANK_URL_RE.fullmatch(url) and len(url) <= BANK_URL_CHARS_MAX):
        raise WalletError(f"not a bank URL: {url[:80]!r} (e.g. http://127.0.0.1:8480)", code="bank_url_invalid")


def check_password(password: str) -> None:
    if len(password) < PASSWORD_CHARS_MIN:
        raise WalletError(f"the password must have at least {PASSWORD_CHARS_MIN} characters",
                          code="password_too_short")


class Keystore:
    """An unlocked wallet. Holds the derived file key and the master seed in memory only."""

    __slots__ = ("path", "_params", "_salt", "_aead", "_entropy", "_master_seed", "_accounts")

    def __init__(self, path: Path, params: KDFParams, salt: bytes, aead: AESGCM, entropy: bytes,
                 accounts: list[tuple[str, str, int, str]]) -> None:
        self.path = Path(path)
        self._params = params
        self._salt = salt
        self._aead = aead
        self._entropy = entropy
        self._master_seed = _MNEMONIC.to_seed(_MNEMONIC.to_mnemonic(entropy))
        self._accounts = [self._account(name, bank, index, url) for name, bank, index, url in accounts]

    def __repr__(self) -> str:  # never key material
        return f"Keystore({str(self.path)!r}, accounts={[a.name for a in self._accounts]})"

    # -- create, restore, open -------------------------------------------------------------------

    @classmethod
    def create(cls, path: Path, password: str, *, bank: str, name: str = "main",
               phrase: str | None = None, params: KDFParams = KDFParams(), bank_url: str = "") -> "Keystore":
        """A new wallet file with one account (index 0); from ``phrase`` to restore, else fresh."""
        check_password(password)
        check_account(name, bank)
        check_bank_url(bank_url)
        entropy = phrase_to_entropy(phrase) if phrase is not None else os.urandom(ENTROPY_BYTES)
        path = Path(path)
        if path.exists():
            raise WalletError(f"a wallet already exists at {path}", code="wallet_exists")
        salt = os.urandom(16)
        store = cls(path, params, salt, _derive_aead(password, salt, params), entropy, [(name, bank, 0, bank_url)])
        store.save(exclusive=True)
        return store

    @classmethod
    def open(cls, path: Path, password: str) -> "Keystore":
        """Unlock a wallet file; ``wallet_unlock_failed`` for a wrong password or any damage."""
        data = _read_file(Path(path))
        params, salt, nonce = _parse_header(data)
        aead = _derive_aead(password, salt, params)
        try:
            plaintext = aead.decrypt(nonce, data[HEADER_BYTES:], data[:HEADER_BYTES])
        except InvalidTag:
            raise WalletError("cannot unlock the wallet: wrong password, or the wallet file is damaged",
                              code="wallet_unlock_failed") from None
        entropy, accounts = _parse_plaintext(plaintext)
        return cls(Path(path), params, salt, aead, entropy, accounts)

    # -- accounts ----------------------------------------------------------------------------------

    @property
    def accounts(self) -> tuple[Account, ...]:
        return tuple(self._accounts)

    def account(self, name: str | None = None) -> Account:
        """The named account, or the first one."""
        if name is None:
            return self._accounts[0]
        for account in self._accounts:
            if account.name == name:
                return account
        raise WalletError(f"no account named {name!r} (see: cbdc-wallet accounts)", code="account_not_found")

    def add_account(self, name: str, bank: str, bank_url: str = "") -> Account:
        """Add the next account (index = the number of accounts so far) and save the file."""
        check_account(name, bank)
        check_bank_url(bank_url)
        if any(a.name == name for a in self._accounts):
            raise WalletError(f"an account named {name!r} exists already", code="account_exists")
        if len(self._accounts) >= ACCOUNTS_MAX:
            raise WalletError(f"at most {ACCOUNTS_MAX} accounts", code="too_many_accounts")
        account = self._account(name, bank, len(self._accounts), bank_url)
        self._accounts.append(account)
        self.save()
        return account

    def set_bank_url(self, name: str, bank_url: str) -> Account:
        """Store (or, with "", forget) where an account's bank answers, and save the file."""
        check_bank_url(bank_url)
        old = self.account(name)
        account = Account(old.name, old.bank, old.index, old.public_key, bank_url)
        self._accounts[old.index] = account
        self.save()
        return account

    def _account(self, name: str, bank: str, index: int, bank_url: str = "") -> Account:
        return Account(name, bank, index, self._private_key(index).public_key, bank_url)

    def _private_key(self, index: int) -> crypto.PrivateKey:
        return crypto.PrivateKey(_account_seed(self._master_seed, index))

    # -- signing: the only place a private key is used ---------------------------------------------

    def sign_tx(self, tx: Tx, account: Account) -> SignedTx:
        """Sign ``tx`` with ``account``'s key (one witness). The caller checked what it signs."""
        if tx.ledger != account.bank:
            raise WalletError(f"account {account.name!r} is at {account.bank}, not {tx.ledger}",
                              code="wrong_bank")
        return sign_body(tx, self._private_key(account.index))

    def sign_message(self, account: Account, purpose: bytes, payload: bytes) -> bytes:
        """A domain-separated signature (ledger = the account's bank) for a non-spend purpose."""
        if purpose not in _MESSAGE_PURPOSES:
            raise ValueError(f"the keystore does not sign for purpose {purpose!r}")
        return self._private_key(account.index).sign(purpose, account.bank, payload)

    def sign_request_headers(self, account: Account, method: str, path_qs: str, body: bytes, *, now: int,
                             nonce: str | None = None) -> dict[str, str]:
        """The shared.signing headers for one request to ``account``'s bank (key id ``wallet:<hex key>``,
        ledger = the bank id), so a wallet's HTTP layer authenticates without ever seeing the key."""
        return sign_request(self._private_key(account.index), f"wallet:{account.public_key.hex()}", method,
                            path_qs, body, now=now, nonce=nonce, ledger=account.bank)

    def backup_phrase(self) -> str:
        """The 24-word backup phrase (show it to the user once; never log it)."""
        return _MNEMONIC.to_mnemonic(self._entropy)

    # -- writing -----------------------------------------------------------------------------------

    def save(self, *, exclusive: bool = False) -> None:
        """Encrypt with a fresh nonce and replace the file atomically (mode 0600)."""
        nonce = os.urandom(12)
        header = _HEADER.pack(MAGIC, FORMAT_VERSION, KDF_SCRYPT, self._params.log2_n, self._params.r,
                              self._params.p, self._salt, nonce)
        plaintext = json.dumps({"entropy": self._entropy.hex(), "accounts": [
            {"name": a.name, "bank": a.bank, "index": a.index, **({"bank_url": a.bank_url} if a.bank_url else {})}
            for a in self._accounts]}).encode()
        write_private_file(self.path, header + self._aead.encrypt(nonce, plaintext, header), exclusive=exclusive)


def _read_file(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(FILE_BYTES_MAX + 1)
    except FileNotFoundError:
        raise WalletError(f"no wallet at {path} (create one: cbdc-wallet create)", code="wallet_not_found") from None
    except OSError as exc:
        raise WalletError(f"cannot read the wallet file {path}: {exc.strerror}", code="wallet_file_invalid") from None
    if len(data) > FILE_BYTES_MAX:
        raise WalletError(f"{path} is too large to be a wallet file", code="wallet_file_invalid")
    return data


def _parse_header(data: bytes) -> tuple[KDFParams, bytes, bytes]:
    if len(data) < HEADER_BYTES + TAG_BYTES or not data.startswith(MAGIC):
        raise WalletError("not a wallet file (or a damaged one)", code="wallet_file_invalid")
    _, version, kdf, log2_n, r, p, salt, nonce = _HEADER.unpack_from(data)
    if version != FORMAT_VERSION or kdf != KDF_SCRYPT:
        raise WalletError(f"unsupported wallet file format {version}/{kdf} (damaged, or from a newer wallet?)",
                          code="wallet_file_invalid")
    params = KDFParams(log2_n, r, p)
    params.check()
    return params, salt, nonce


def _parse_plaintext(plaintext: bytes) -> tuple[bytes, list[tuple[str, str, int, str]]]:
    """Authenticated content we wrote ourselves; still checked, as a newer writer may differ."""
    try:
        obj = json.loads(plaintext)
        entropy = bytes.fromhex(obj["entropy"])
        accounts = [(a["name"], a["bank"], a["index"], a.get("bank_url", "")) for a in obj["accounts"]]
        if not all(isinstance(a[3], str) for a in accounts):
            raise TypeError("bank_url")
    except (ValueError, KeyError, TypeError):
        raise WalletError("the wallet's contents are not understood", code="wallet_file_invalid") from None
    if len(entropy) not in (16, 20, 24, 28, 32) or [a[2] for a in accounts] != list(range(len(accounts))) \
            or not accounts:
        raise WalletError("the wallet's contents are not understood", code="wallet_file_invalid")
    return entropy, accounts


def write_private_file(path: Path, data: bytes, *, exclusive: bool = False) -> None:
    """Write ``data`` to ``path`` atomically, readable by the owner only.

    A temp file (0600) in the same directory, fsync, rename over the target, fsync the directory.
    ``exclusive``: refuse if ``path`` exists (checked again at the rename by a hard link, so two
    concurrent creators cannot both win).
    """
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise WalletError(f"a wallet already exists at {path}", code="wallet_exists") from None
        else:
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
