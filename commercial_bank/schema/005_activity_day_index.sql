-- The (wallet, at) index served the daily outgoing sums, which the running totals of
-- 004_wallet_totals.sql replaced; every payment still paid for keeping it (two activity rows, each
-- an insert at the right edge of a hot wallet's range). The audit's per-day sums use the primary
-- key's (wallet, ...) prefix.
DROP INDEX bank_activity_day;
