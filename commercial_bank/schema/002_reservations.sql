-- Room reserved in a payee's holding limit for a cross-bank payment, asked for by the payer bank
-- before it applies the payer's outbound (so a payment that would break the payee's limit is refused
-- before any value moves). A reservation counts against the payee's holding limit until the payment
-- is credited (bank_inbound) or it expires. A payee with a linked deposit account may receive more
-- than its room: ``room`` is what will be held as coins, the rest goes to the deposit account
-- (reverse waterfall).
CREATE TABLE bank_reservations (
    payment_id text PRIMARY KEY,
    payer_bank text NOT NULL,
    payee_key  bytea NOT NULL,
    amount     bigint NOT NULL CHECK (amount > 0),
    room       bigint NOT NULL CHECK (room >= 0 AND room <= amount),   -- the part held as coins
    created_at bigint NOT NULL,
    expires_at bigint NOT NULL
);
CREATE INDEX bank_reservations_payee ON bank_reservations (payee_key, expires_at);
