-- The central bank's own tables, on top of the shared ledger tables (shared/schema/001_ledger.sql).
-- Tier-1 value lives only in ledger_utxo; nothing here holds a balance.

-- The register of commercial banks. A bank's holdings are owned by its public key; its escrow
-- (the tier-1 backing of its tier-2 coins) by escrow_owner = sha256('cbdc/escrow/' || bank_id),
-- which is not a key: the ledger maps it to the bank's key (LedgerRules.owner_signers).
CREATE TABLE cb_banks (
    bank_id       text PRIMARY KEY,
    name          text NOT NULL,
    public_key    bytea NOT NULL UNIQUE CHECK (length(public_key) = 32),
    escrow_owner  bytea NOT NULL UNIQUE CHECK (length(escrow_owner) = 32),
    callback_url  text NOT NULL,
    status        text NOT NULL CHECK (status IN ('active', 'suspended')),
    registered_at bigint NOT NULL,
    updated_at    bigint NOT NULL
);

-- One row; approvals lock it (SELECT ... FOR UPDATE) so that concurrent issuances are checked
-- against the supply cap one at a time.
CREATE TABLE cb_supply_lock (
    id boolean PRIMARY KEY DEFAULT true CHECK (id)
);
INSERT INTO cb_supply_lock DEFAULT VALUES;

-- Issuance proposals: proposed by one operator, approved or rejected by a different one.
-- 'expired' is not stored: a pending proposal past expires_at is expired.
CREATE TABLE cb_proposals (
    proposal_id text PRIMARY KEY,
    bank_id     text NOT NULL REFERENCES cb_banks (bank_id),
    amount      bigint NOT NULL CHECK (amount > 0),
    memo        text NOT NULL DEFAULT '',
    proposed_by text NOT NULL,
    proposed_at bigint NOT NULL,
    expires_at  bigint NOT NULL,
    status      text NOT NULL CHECK (status IN ('pending', 'approved', 'rejected')),
    decided_by  text,
    decided_at  bigint,
    tx_id       bytea
);

-- Nonces of signed requests, remembered for the replay window (older timestamps are refused
-- anyway); the primary key refuses a replay across worker processes and restarts.
CREATE TABLE cb_request_nonces (
    key_id    text NOT NULL,
    nonce     text NOT NULL,
    timestamp bigint NOT NULL,
    PRIMARY KEY (key_id, nonce)
);
CREATE INDEX cb_request_nonces_timestamp ON cb_request_nonces (timestamp);

-- Settled (or refused) payments, one row per payment id, written in the same database
-- transaction as the tier-1 settle transaction: a payment id is settled at most once (I5).
CREATE TABLE cb_payments (
    payment_id   text PRIMARY KEY,
    payer_bank   text NOT NULL REFERENCES cb_banks (bank_id),
    payee_bank   text NOT NULL,
    amount       bigint NOT NULL CHECK (amount > 0),
    status       text NOT NULL CHECK (status IN ('settled', 'refused')),
    refusal_code text,
    tx_id        bytea,
    settled_at   bigint NOT NULL,
    signature    bytea,
    request_key  text NOT NULL,   -- the signed request that instructed it (evidence, I6)
    request_signature bytea NOT NULL
);
CREATE INDEX cb_payments_payer ON cb_payments (payer_bank);
CREATE INDEX cb_payments_payee ON cb_payments (payee_bank);

-- Each bank's tier-1 history: one row per logged transaction that spends or pays its holdings or
-- escrow, written in the same database transaction as the ledger rows (paginated by seq).
CREATE TABLE cb_bank_history (
    bank_id text NOT NULL,
    seq     bigint NOT NULL,
    tx_id   bytea NOT NULL,
    PRIMARY KEY (bank_id, seq)
);

-- Supply figures read the issue (kind 1) and redeem (kind 2) rows of the log.
CREATE INDEX cb_ledger_tx_supply ON ledger_tx (kind) WHERE kind IN (1, 2);
