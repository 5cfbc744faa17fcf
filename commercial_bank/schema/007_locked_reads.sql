-- Limits are checked on totals read with the wallets' rows locked. A single statement that locks
-- rows and also reads other rows does not do that: its snapshot is taken when it starts, and a
-- statement that waited for a lock sees the locked row's newest version but every other row (the
-- running totals, the reservations) as they were before the wait -- so two batches could both
-- pass a holding or daily limit that only one of them fits. These functions lock first and read
-- after, in a second statement with a fresh snapshot, still in one round trip.
CREATE FUNCTION bank_lock_wallets(keys bytea[], now bigint, excluding text[])
RETURNS TABLE (public_key bytea, customer_name text, kyc_tier text, deposit_account text,
               registered_at bigint, held bigint, out_day bigint, out_today bigint, reserved bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    PERFORM 1 FROM bank_wallets w WHERE w.public_key = ANY(keys) ORDER BY w.public_key FOR UPDATE;
    RETURN QUERY   -- with the room promised to payments by open reservations (not those excluded)
        SELECT w.public_key, w.customer_name, w.kyc_tier, w.deposit_account, w.registered_at,
               t.held, t.out_day, t.out_today,
               (SELECT coalesce(sum(r.room), 0)::bigint FROM bank_reservations r
                 WHERE r.payee_key = w.public_key AND r.expires_at >= now AND r.payment_id <> ALL(excluding))
          FROM bank_wallets w JOIN bank_wallet_totals t ON t.wallet = w.public_key
         WHERE w.public_key = ANY(keys) ORDER BY w.public_key;
END $$;

-- What a batch of spends needs, read with its wallets locked: the wallets and their totals ('w'),
-- which of its txs are already logged ('l'), the room promised to the payees by open reservations
-- ('r'), and the outbounds already recorded under its payment ids ('p').
CREATE FUNCTION bank_flush_state(wallets bytea[], tx_ids bytea[], payees bytea[], payment_ids text[], now bigint)
RETURNS TABLE (what text, key bytea, text1 text, text2 text, n1 bigint, n2 bigint, n3 bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    PERFORM 1 FROM bank_wallets w WHERE w.public_key = ANY(wallets) ORDER BY w.public_key FOR UPDATE;
    RETURN QUERY
        SELECT 'w'::text, w.public_key, w.kyc_tier, w.deposit_account, t.held, t.out_day, t.out_today
          FROM bank_wallets w JOIN bank_wallet_totals t ON t.wallet = w.public_key
         WHERE w.public_key = ANY(wallets)
        UNION ALL
        SELECT 'l', l.tx_id, NULL, NULL, NULL, NULL, NULL FROM ledger_tx l WHERE l.tx_id = ANY(tx_ids)
        UNION ALL
        SELECT 'r', r.payee_key, NULL, NULL, sum(r.room)::bigint, NULL, NULL FROM bank_reservations r
         WHERE r.payee_key = ANY(payees) AND r.expires_at >= now
         GROUP BY r.payee_key
        UNION ALL
        SELECT 'p', p.outbound_tx_id, p.payment_id, NULL, NULL, NULL, NULL FROM bank_payments p
         WHERE p.payment_id = ANY(payment_ids);
END $$;

-- A reservation is released in the transaction that credits its payment (it counted against the
-- payee's holding limit only until then); expired ones are swept by the recovery loop. Before,
-- every reservation stayed, and each limit check summed all of a payee's reservations of the last
-- ten minutes, checking each against the credits: work that grew with the payment rate.
DELETE FROM bank_reservations r USING bank_inbound i WHERE i.payment_id = r.payment_id;
CREATE INDEX bank_reservations_expiry ON bank_reservations (expires_at);
