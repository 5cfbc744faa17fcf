-- The payer bank's opaque 32-byte reference of a payment (the tx id of the payer-signed outbound
-- transaction at tier 2). The central bank only records it and signs it into the notice, so the
-- payee bank can bind the notice to the outbound it is shown without the central bank learning
-- the payee's key. Payments recorded before this migration read as unbound (all zeros).
ALTER TABLE cb_payments ADD COLUMN reference bytea NOT NULL DEFAULT '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea
    CHECK (length(reference) = 32);
