-- A commercial bank's own tables, on top of the shared ledger tables (shared/schema/001_ledger.sql).
-- Tier-2 value (CBDC) lives only in ledger_utxo. The one balance column here is the deposit
-- account's: ordinary bank money, not CBDC, and every change to it is an entry with a unique key.

-- Deposit accounts linked to wallets (the bank's ordinary money; a stand-in for core banking).
CREATE TABLE bank_deposit_accounts (
    account_id text PRIMARY KEY,
    balance    bigint NOT NULL CHECK (balance >= 0),
    created_at bigint NOT NULL
);

-- Every change to a deposit balance, keyed so that each happens at most once:
-- credit:<wallet>:<reference>, fund:<funding id>, fund-return:<funding id>, defund:<defund id>.
CREATE TABLE bank_deposit_entries (
    entry_key  text PRIMARY KEY,
    account_id text NOT NULL REFERENCES bank_deposit_accounts (account_id),
    amount     bigint NOT NULL CHECK (amount <> 0),
    created_at bigint NOT NULL
);

-- The customer record: one wallet key per customer in this prototype, with its KYC tier.
CREATE TABLE bank_wallets (
    public_key      bytea PRIMARY KEY CHECK (length(public_key) = 32),
    customer_name   text NOT NULL,
    kyc_tier        text NOT NULL,
    deposit_account text UNIQUE REFERENCES bank_deposit_accounts (account_id),
    registered_at   bigint NOT NULL
);

-- Nonces of wallet-signed requests, remembered for the replay window.
CREATE TABLE bank_request_nonces (
    key_id    text NOT NULL,
    nonce     text NOT NULL,
    timestamp bigint NOT NULL,
    PRIMARY KEY (key_id, nonce)
);
CREATE INDEX bank_request_nonces_timestamp ON bank_request_nonces (timestamp);

-- One row per wallet per logged transaction that changes its balance, written in the same
-- database transaction as the ledger rows: history and receipts, and the daily outgoing total
-- (sum of outgoing since the start of the UTC day; a refund counts negative), so no counter drifts.
CREATE TABLE bank_activity (
    wallet       bytea NOT NULL,
    seq          bigint NOT NULL,      -- ledger_tx.seq
    tx_id        bytea NOT NULL,
    kind         text NOT NULL,        -- transfer, outbound, mint, burn, inbound, refund
    delta        bigint NOT NULL,      -- change to the wallet's balance
    outgoing     bigint NOT NULL,      -- what counts against the daily limit
    counterparty text NOT NULL,        -- a key (hex), a bank id or a deposit account
    reference    text NOT NULL,
    at           bigint NOT NULL,
    PRIMARY KEY (wallet, seq)
);
CREATE INDEX bank_activity_day ON bank_activity (wallet, at);

-- Funding: deposit money -> CBDC. debited -> funded -> minted, or debited -> failed (deposit returned).
CREATE TABLE bank_fundings (
    funding_id text PRIMARY KEY,          -- chosen by the client: the idempotency key
    wallet     bytea NOT NULL REFERENCES bank_wallets (public_key),
    account_id text NOT NULL,
    amount     bigint NOT NULL CHECK (amount > 0),
    state      text NOT NULL CHECK (state IN ('debited', 'funded', 'minted', 'failed')),
    fund_tx    bytea,                     -- the signed tier-1 fund tx (JSON), stored before it is sent
    fund_tx_id bytea,
    mint_tx_id bytea,
    failure    text,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL
);
CREATE INDEX bank_fundings_open ON bank_fundings (created_at) WHERE state IN ('debited', 'funded');

-- Defunding: CBDC -> deposit money. burned -> defunded -> credited.
-- kind 'burn': the wallet burned coins (burn_tx_id). kind 'waterfall': the part of an inbound
-- cross-bank payment beyond the payee's holding limit, which never became coins here (defund_id
-- 'waterfall:<payment id>', no burn) and goes to the payee's deposit account by the same steps.
CREATE TABLE bank_defunds (
    defund_id    text PRIMARY KEY,        -- the burn's reference, chosen by the wallet
    kind         text NOT NULL DEFAULT 'burn' CHECK (kind IN ('burn', 'waterfall')),
    wallet       bytea NOT NULL REFERENCES bank_wallets (public_key),
    account_id   text NOT NULL,
    amount       bigint NOT NULL CHECK (amount > 0),
    burn_tx_id   bytea UNIQUE CHECK ((kind = 'burn') = (burn_tx_id IS NOT NULL)),
    state        text NOT NULL CHECK (state IN ('burned', 'defunded', 'credited')),
    defund_tx    bytea,                   -- the signed tier-1 defund tx (JSON), stored before it is sent
    defund_tx_id bytea,
    created_at   bigint NOT NULL,
    updated_at   bigint NOT NULL
);
CREATE INDEX bank_defunds_open ON bank_defunds (created_at) WHERE state IN ('burned', 'defunded');

-- The outbox of cross-bank payments this bank pays, written in the same database transaction as
-- the payer-signed outbound transaction. pending -> settled -> completed, or pending -> refunded.
CREATE TABLE bank_payments (
    payment_id     text PRIMARY KEY,      -- the outbound's reference, "<this bank>:<wallet's id>"
    payer          bytea NOT NULL,
    payee_bank     text NOT NULL,
    payee_key      bytea NOT NULL,
    amount         bigint NOT NULL CHECK (amount > 0),
    outbound_tx_id bytea NOT NULL UNIQUE,
    outbound_tx    bytea NOT NULL,        -- signed tx JSON: pushed to the payee bank with the notice
    state          text NOT NULL CHECK (state IN ('pending', 'settled', 'completed', 'refunded')),
    notice         bytea,                 -- the central bank's signed notice (JSON)
    refusal_code   text,
    refund_tx_id   bytea,
    attempts       integer NOT NULL DEFAULT 0,
    last_error     text,
    created_at     bigint NOT NULL,
    updated_at     bigint NOT NULL
);
CREATE INDEX bank_payments_open ON bank_payments (created_at) WHERE state IN ('pending', 'settled');
CREATE INDEX bank_payments_payer ON bank_payments (payer, created_at);

-- Cross-bank payments credited here: one row per payment id (I5), in the same database
-- transaction as the inbound transaction that credits the payee.
CREATE TABLE bank_inbound (
    payment_id     text PRIMARY KEY,
    payer_bank     text NOT NULL,
    payee_key      bytea NOT NULL,
    amount         bigint NOT NULL CHECK (amount > 0),     -- the settled amount
    deposit_amount bigint NOT NULL DEFAULT 0 CHECK (deposit_amount >= 0 AND deposit_amount <= amount),
                                                           -- reverse waterfall: to the deposit account
    outbound_tx_id bytea NOT NULL,
    settle_tx_id   bytea NOT NULL,
    inbound_tx_id  bytea UNIQUE,                           -- NULL when all of it went to the deposit
    credited_at    bigint NOT NULL
);
