-- Running totals on each wallet's row, so the hot path checks the holding and daily limits from the
-- rows it locks anyway instead of summing the wallet's unspent outputs and today's activity on every
-- batch (a cost that grew with the wallet's coins and with the day's payments).
--
-- They cannot drift from what they summarise: statement-level triggers maintain them in the same
-- statement as every change to ledger_utxo (whatever path made it: spends, mints, inbounds, burns,
-- the engine putting a loser's inputs back, a bulk COPY) and to bank_activity, and the system audit
-- recomputes both from the rows and reports any difference.
--   held      = sum of the wallet's unspent outputs
--   out_day   = the UTC day (epoch seconds at 00:00) out_today counts; 0 before the first payment
--   out_today = sum of bank_activity.outgoing of the wallet's rows in that day
ALTER TABLE bank_wallets
    ADD COLUMN held      bigint NOT NULL DEFAULT 0,
    ADD COLUMN out_day   bigint NOT NULL DEFAULT 0,
    ADD COLUMN out_today bigint NOT NULL DEFAULT 0;

CREATE FUNCTION bank_held_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE bank_wallets w SET held = w.held + n.total
      FROM (SELECT owner, sum(amount) AS total FROM added GROUP BY owner) n
     WHERE w.public_key = n.owner;
    RETURN NULL;
END $$;

CREATE FUNCTION bank_held_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE bank_wallets w SET held = w.held - o.total
      FROM (SELECT owner, sum(amount) AS total FROM removed GROUP BY owner) o
     WHERE w.public_key = o.owner;
    RETURN NULL;
END $$;

CREATE TRIGGER bank_held_added AFTER INSERT ON ledger_utxo
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION bank_held_added();
CREATE TRIGGER bank_held_removed AFTER DELETE ON ledger_utxo
    REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION bank_held_removed();

-- the rows of a statement may span two days (a batch at midnight): only the latest day per wallet
-- counts; rows of a day older than the wallet's out_day change nothing
CREATE FUNCTION bank_outgoing_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH r AS (SELECT wallet, at - at % 86400 AS day, outgoing FROM added WHERE outgoing <> 0),
         d AS (SELECT wallet, day, sum(outgoing) AS total
                 FROM (SELECT r.*, max(day) OVER (PARTITION BY wallet) AS last FROM r) x
                WHERE day = last GROUP BY wallet, day)
    UPDATE bank_wallets w
       SET out_today = CASE WHEN w.out_day = d.day THEN w.out_today + d.total
                            WHEN w.out_day > d.day THEN w.out_today
                            ELSE d.total END,
           out_day = greatest(w.out_day, d.day)
      FROM d
     WHERE w.public_key = d.wallet;
    RETURN NULL;
END $$;

CREATE TRIGGER bank_outgoing_added AFTER INSERT ON bank_activity
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION bank_outgoing_added();

-- the totals of the rows already there
UPDATE bank_wallets w SET held = u.total
  FROM (SELECT owner, sum(amount) AS total FROM ledger_utxo GROUP BY owner) u
 WHERE w.public_key = u.owner;
UPDATE bank_wallets w SET out_day = a.day, out_today = a.total
  FROM (SELECT DISTINCT ON (wallet) wallet, day, total
          FROM (SELECT wallet, at - at % 86400 AS day, sum(outgoing) AS total FROM bank_activity
                 GROUP BY wallet, at - at % 86400) g
         ORDER BY wallet, day DESC) a
 WHERE w.public_key = a.wallet;
