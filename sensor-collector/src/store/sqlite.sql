-- The collector's SQLite store (collector.db). Event data is append-only: a batch row holds
-- the batch's signed header, its signature and its record items verbatim, stored once, in
-- the transaction that advances the host's checkpoint; a different batch for a number
-- already held goes to `forks`, never over the held one.
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
    PRIMARY KEY (host_id, number)
) WITHOUT ROWID;
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
