-- On-us payments through the bank: an outbound naming this bank as the payee's. The bank applies
-- the payer's outbound and credits the payee in one database transaction, with no tier-1
-- settlement: the payment row is 'completed' at once and its bank_inbound row (payer_bank = this
-- bank) has no settlement tx. It is how an on-us payment over the payee's holding limit sends the
-- excess to the payee's linked deposit account (reverse waterfall).
ALTER TABLE bank_inbound ALTER COLUMN settle_tx_id DROP NOT NULL;
