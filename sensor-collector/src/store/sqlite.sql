-- The collector's SQLite store (collector.db). Event data is append-only: a batch row holds
-- the batch's signed header, its signature and its record items verbatim, stored once, in
-- the transaction that advances the host's checkpoint; a different batch for a number
-- already held goes to `forks`, never over the held one.
--
-- `events` finds batch rows by the columns the collector fills from the decoded records when
-- it stores a batch (`BatchIndex`): `min_wall`/`max_wall`, the range of the records' wall
-- times (the header's when the batch is empty), and `kinds`, the distinct kind names between
-- commas (',file_open,ptrace,'; NULL when a record did not decode: then the range is all of
-- time and every kind filter matches). `received` numbers batches in the order they were
-- stored, collector-wide (max + 1 inside the writing transaction, which SQLite serializes):
-- `events --follow` polls on it, never on wall time, which hosts set.
--
-- `pcr` is the anchor PCR once the batch is extended, by the collector's replay of the host's
-- TPM boot cycle (NULL when the batch is not in a replay the collector holds): a quote that
-- names the batch later is checked against it. `checkpoints.state` holds the verifier's
-- checkpoint and the replay state (`Held`).
CREATE TABLE IF NOT EXISTS hosts (
    host_id     BLOB PRIMARY KEY,
    key_epoch   INTEGER NOT NULL,
    public_key  BLOB NOT NULL,
    enrolled_by TEXT NOT NULL,
    enrolled_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    host_id     BLOB PRIMARY KEY,
    next_batch  INTEGER NOT NULL,
    state       TEXT NOT NULL,
    updated_ns  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    host_id     BLOB NOT NULL,
    number      INTEGER NOT NULL,
    epoch       INTEGER NOT NULL,
    first_seq   INTEGER NOT NULL,
    count       INTEGER NOT NULL,
    wall_ns     INTEGER NOT NULL,
    header      BLOB NOT NULL,
    signature   BLOB NOT NULL,
    digest      BLOB NOT NULL,
    records     BLOB NOT NULL,
    received_ns INTEGER NOT NULL,
    min_wall    INTEGER NOT NULL,
    max_wall    INTEGER NOT NULL,
    kinds       TEXT,
    received    INTEGER NOT NULL UNIQUE,
    pcr         BLOB,
    PRIMARY KEY (host_id, number)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS batches_host_time ON batches (host_id, max_wall);
CREATE INDEX IF NOT EXISTS batches_time ON batches (max_wall);
CREATE TABLE IF NOT EXISTS forks (
    host_id     BLOB NOT NULL,
    number      INTEGER NOT NULL,
    digest      BLOB NOT NULL,
    header      BLOB NOT NULL,
    signature   BLOB NOT NULL,
    records     BLOB NOT NULL,
    received_ns INTEGER NOT NULL,
    PRIMARY KEY (host_id, number, digest)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS alarms (
    id          INTEGER PRIMARY KEY,
    host_id     BLOB NOT NULL,
    kind        TEXT NOT NULL,
    batch       INTEGER NOT NULL,
    detail      TEXT NOT NULL,
    raised_ns   INTEGER NOT NULL,
    UNIQUE (host_id, kind, batch)
);
