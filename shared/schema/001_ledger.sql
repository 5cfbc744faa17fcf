-- The UTXO ledger engine, used by both tiers (each tier adds its own tables on top).
--
-- ledger_utxo holds only unspent outputs: a spend deletes its row, so the hot table stays lean.
-- ledger_tx is the append-only log of every accepted transaction (its canonical body and
-- witnesses); history, audits and "exists" answers read it.

CREATE TABLE ledger_tx (
    tx_id       bytea PRIMARY KEY CHECK (length(tx_id) = 32),
    seq         bigint GENERATED ALWAYS AS IDENTITY,
    kind        smallint NOT NULL,
    body        bytea NOT NULL,
    witnesses   bytea NOT NULL,
    n_outputs   integer NOT NULL CHECK (n_outputs >= 0),
    value_in    bigint NOT NULL CHECK (value_in >= 0),
    value_out   bigint NOT NULL CHECK (value_out >= 0),
    reference   text NOT NULL DEFAULT '',
    accepted_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX ledger_tx_seq ON ledger_tx (seq);

CREATE TABLE ledger_utxo (
    tx_id  bytea NOT NULL,
    idx    integer NOT NULL CHECK (idx >= 0),
    owner  bytea NOT NULL,
    amount bigint NOT NULL CHECK (amount > 0),
    PRIMARY KEY (tx_id, idx)
);
CREATE INDEX ledger_utxo_owner ON ledger_utxo (owner);

CREATE FUNCTION ledger_tx_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger_tx is append-only' USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER ledger_tx_no_update BEFORE UPDATE OR DELETE ON ledger_tx
    FOR EACH ROW EXECUTE FUNCTION ledger_tx_append_only();
CREATE TRIGGER ledger_tx_no_truncate BEFORE TRUNCATE ON ledger_tx
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_tx_append_only();

-- Apply a batch of validated transactions with set-based statements, in the caller's database
-- transaction, and answer one row per transaction (tx_no is its 1-based position in the batch):
--   created              committed now (seq, accepted_at of the new log row)
--   exists               already in the log: the original seq and accepted_at
--   input_not_found      input bad_input names no output this ledger ever created
--   input_already_spent  input bad_input was spent by another transaction
--   input_mismatch       input bad_input exists but with another owner or amount
--   input_contended      input bad_input was briefly held by a concurrent loser; retry
-- A transaction wins only if every one of its inputs was removed; the inputs a loser removed are
-- put back before commit, so one bad transaction never fails or starves its batch-mates. Two
-- concurrent spends of one output serialise on its row lock: the second finds it gone. The
-- caller guarantees that no two transactions in one call touch the same outpoint (waves).
CREATE FUNCTION ledger_apply(
    p_tx_id bytea[], p_kind smallint[], p_body bytea[], p_witnesses bytea[], p_n_inputs integer[],
    p_n_outputs integer[], p_value_in bigint[], p_value_out bigint[], p_reference text[],
    p_in_tx integer[], p_in_prev bytea[], p_in_idx integer[], p_in_owner bytea[], p_in_amount bigint[],
    p_out_tx integer[], p_out_idx integer[], p_out_owner bytea[], p_out_amount bigint[]
) RETURNS TABLE (tx_no integer, code text, bad_input integer, seq bigint, accepted_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    v_exists     integer[];
    v_deleted    bigint[];   -- input row numbers removed from ledger_utxo
    v_deleted_tx integer[];  -- ... and the transaction each belongs to
    v_losers     integer[];
    v_created    integer[];
    v_seq        bigint[];
    v_at         timestamptz[];
    v_late       integer[];  -- lost the log insert to a concurrent twin: exists
BEGIN
    -- 1. already in the log
    SELECT coalesce(array_agg(t.n), '{}') INTO v_exists
      FROM unnest(p_tx_id) WITH ORDINALITY AS t(tx_id, n)
      JOIN ledger_tx l ON l.tx_id = t.tx_id;

    -- 2. spend every claimed input whose owner and amount match
    WITH i AS (
        SELECT * FROM unnest(p_in_tx, p_in_prev, p_in_idx, p_in_owner, p_in_amount)
                      WITH ORDINALITY AS i(tx_no, prev, idx, owner, amount, row_no)
         WHERE i.tx_no NOT IN (SELECT unnest(v_exists))
    ), d AS (
        DELETE FROM ledger_utxo u USING i
         WHERE u.tx_id = i.prev AND u.idx = i.idx AND u.owner = i.owner AND u.amount = i.amount
        RETURNING i.row_no, i.tx_no
    )
    SELECT coalesce(array_agg(d.row_no), '{}'), coalesce(array_agg(d.tx_no), '{}')
      INTO v_deleted, v_deleted_tx FROM d;

    -- 3. losers: some input was not removed
    SELECT coalesce(array_agg(t.n), '{}') INTO v_losers
      FROM unnest(p_n_inputs) WITH ORDINALITY AS t(need, n)
      LEFT JOIN (SELECT x.tx_no, count(*) AS got FROM unnest(v_deleted_tx) AS x(tx_no) GROUP BY x.tx_no) g
             ON g.tx_no = t.n
     WHERE t.need > coalesce(g.got, 0)
       AND t.n NOT IN (SELECT unnest(v_exists));

    -- 4. log the winners, in batch order (a concurrent twin of a zero-input tx loses here)
    WITH w AS (
        SELECT t.* FROM unnest(p_tx_id, p_kind, p_body, p_witnesses, p_n_outputs, p_value_in,
                               p_value_out, p_reference)
                        WITH ORDINALITY AS t(tx_id, kind, body, witnesses, n_outputs, value_in,
                                             value_out, reference, n)
         WHERE t.n NOT IN (SELECT unnest(v_exists)) AND t.n NOT IN (SELECT unnest(v_losers))
         ORDER BY t.n
    ), ins AS (
        INSERT INTO ledger_tx AS l (tx_id, kind, body, witnesses, n_outputs, value_in, value_out, reference)
        SELECT w.tx_id, w.kind, w.body, w.witnesses, w.n_outputs, w.value_in, w.value_out, w.reference
          FROM w
        ON CONFLICT ON CONSTRAINT ledger_tx_pkey DO NOTHING
        RETURNING l.tx_id, l.seq, l.accepted_at
    )
    SELECT coalesce(array_agg(w.n ORDER BY w.n), '{}'), coalesce(array_agg(ins.seq ORDER BY w.n), '{}'),
           coalesce(array_agg(ins.accepted_at ORDER BY w.n), '{}')
      INTO v_created, v_seq, v_at
      FROM ins JOIN w ON w.tx_id = ins.tx_id;

    SELECT coalesce(array_agg(t.n), '{}') INTO v_late
      FROM generate_series(1, cardinality(p_tx_id)) AS t(n)
     WHERE t.n NOT IN (SELECT unnest(v_exists)) AND t.n NOT IN (SELECT unnest(v_losers))
       AND t.n NOT IN (SELECT unnest(v_created));

    -- 5. put back what losers (and late twins) removed
    IF cardinality(v_losers) > 0 OR cardinality(v_late) > 0 THEN
        INSERT INTO ledger_utxo (tx_id, idx, owner, amount)
        SELECT i.prev, i.idx, i.owner, i.amount
          FROM unnest(p_in_tx, p_in_prev, p_in_idx, p_in_owner, p_in_amount)
                      WITH ORDINALITY AS i(tx_no, prev, idx, owner, amount, row_no)
          JOIN unnest(v_deleted) AS d(row_no) ON d.row_no = i.row_no
         WHERE i.tx_no IN (SELECT unnest(v_losers) UNION ALL SELECT unnest(v_late));
    END IF;

    -- 6. the winners' outputs
    INSERT INTO ledger_utxo (tx_id, idx, owner, amount)
    SELECT p_tx_id[o.tx_no], o.idx, o.owner, o.amount
      FROM unnest(p_out_tx, p_out_idx, p_out_owner, p_out_amount) AS o(tx_no, idx, owner, amount)
     WHERE o.tx_no IN (SELECT unnest(v_created));

    -- 7. one answer per transaction
    RETURN QUERY
        SELECT c.n::integer, 'created'::text, NULL::integer, c.s, c.a
          FROM unnest(v_created, v_seq, v_at) AS c(n, s, a);
    RETURN QUERY
        SELECT e.n::integer, 'exists'::text, NULL::integer, l.seq, l.accepted_at
          FROM unnest(v_exists || v_late) AS e(n)
          JOIN ledger_tx l ON l.tx_id = p_tx_id[e.n];
    IF cardinality(v_losers) > 0 THEN
        RETURN QUERY
            SELECT DISTINCT ON (i.tx_no) i.tx_no,
                   CASE WHEN twin.tx_id IS NOT NULL THEN 'exists'
                        WHEN u.tx_id IS NOT NULL AND u.owner = i.owner AND u.amount = i.amount
                             THEN 'input_contended'
                        WHEN u.tx_id IS NOT NULL THEN 'input_mismatch'
                        WHEN p.n_outputs > i.idx THEN 'input_already_spent'
                        ELSE 'input_not_found' END,
                   CASE WHEN twin.tx_id IS NULL THEN i.pos::integer END,
                   twin.seq, twin.accepted_at
              FROM (SELECT x.*, x.row_no - min(x.row_no) OVER (PARTITION BY x.tx_no) AS pos
                      FROM unnest(p_in_tx, p_in_prev, p_in_idx, p_in_owner, p_in_amount)
                                  WITH ORDINALITY AS x(tx_no, prev, idx, owner, amount, row_no)
                     WHERE x.tx_no IN (SELECT unnest(v_losers))) i
              LEFT JOIN ledger_utxo u ON u.tx_id = i.prev AND u.idx = i.idx
              LEFT JOIN ledger_tx p ON p.tx_id = i.prev
              LEFT JOIN ledger_tx twin ON twin.tx_id = p_tx_id[i.tx_no]
             WHERE i.row_no NOT IN (SELECT unnest(v_deleted)) OR twin.tx_id IS NOT NULL
             ORDER BY i.tx_no, i.row_no;
    END IF;
END $$;
