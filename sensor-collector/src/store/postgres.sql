-- The collector's PostgreSQL store, shared by several collectors: the tables of sqlite.sql
-- with PostgreSQL's types. Uniqueness of (host, number) and the compare-and-set on
-- `checkpoints` hold across collector processes; nothing depends on a lock in one of them.
--
-- `events` (docs/collector.md, "Schema"): `min_wall`, `max_wall` and `kinds` are filled from
-- the decoded records as in sqlite.sql (`kinds` NULL: not known, every kind filter matches).
-- `received` numbers batches in the order they were stored. Several collectors commit at
-- once, so a sequence number taken first may become visible last: `events --follow` does not
-- poll on `received` alone but on `xact`, the id of the storing transaction, reading the
-- rows of transactions below the oldest one still running (`pg_snapshot_xmin`), each such
-- window once, in `received` order; no row can still appear below that bound. `pcr` and
-- `checkpoints.state` as in sqlite.sql (the host's TPM replay).
--
-- Plain indexes, not partitions: `events --host H --since 1h` is a range of the
-- (host_id, max_wall) index, which reads only the rows it returns at any table size
-- (docs/performance.md, "Collector queries": 0.26 ms for 99 of 100,000 batch rows holding 10
-- million records; hash partitions by host measured no faster).
CREATE TABLE IF NOT EXISTS hosts (
    host_id     BYTEA PRIMARY KEY,
    key_epoch   BIGINT NOT NULL,
    public_key  BYTEA NOT NULL,
    enrolled_by TEXT NOT NULL,
    enrolled_ns BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    host_id     BYTEA PRIMARY KEY,
    next_batch  BIGINT NOT NULL,
    state       TEXT NOT NULL,
    updated_ns  BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    host_id     BYTEA NOT NULL,
    number      BIGINT NOT NULL,
    epoch       BIGINT NOT NULL,
    first_seq   BIGINT NOT NULL,
    count       BIGINT NOT NULL,
    wall_ns     BIGINT NOT NULL,
    header      BYTEA NOT NULL,
    signature   BYTEA NOT NULL,
    digest      BYTEA NOT NULL,
    records     BYTEA NOT NULL,
    received_ns BIGINT NOT NULL,
    min_wall    BIGINT NOT NULL,
    max_wall    BIGINT NOT NULL,
    kinds       TEXT[],
    received    BIGINT GENERATED ALWAYS AS IDENTITY,
    xact        BIGINT NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    pcr         BYTEA,
    PRIMARY KEY (host_id, number)
);
CREATE INDEX IF NOT EXISTS batches_host_time ON batches (host_id, max_wall);
CREATE INDEX IF NOT EXISTS batches_time ON batches (max_wall);
CREATE INDEX IF NOT EXISTS batches_xact ON batches (xact);
CREATE TABLE IF NOT EXISTS forks (
    host_id     BYTEA NOT NULL,
    number      BIGINT NOT NULL,
    digest      BYTEA NOT NULL,
    header      BYTEA NOT NULL,
    signature   BYTEA NOT NULL,
    records     BYTEA NOT NULL,
    received_ns BIGINT NOT NULL,
    PRIMARY KEY (host_id, number, digest)
);
CREATE TABLE IF NOT EXISTS alarms (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    host_id     BYTEA NOT NULL,
    kind        TEXT NOT NULL,
    batch       BIGINT NOT NULL,
    detail      TEXT NOT NULL,
    raised_ns   BIGINT NOT NULL,
    UNIQUE (host_id, kind, batch)
);
-- Event rows cannot change, even for the owner, short of dropping this trigger: tamper
-- evidence still rests on the signatures and `sensor-collector verify`, this only stops
-- mistakes and a collector role that was given more than it should have.
CREATE OR REPLACE FUNCTION sensor_append_only() RETURNS trigger LANGUAGE plpgsql AS
    $$BEGIN RAISE EXCEPTION 'append-only: % on %', TG_OP, TG_TABLE_NAME; END$$;
CREATE OR REPLACE TRIGGER batches_append_only BEFORE UPDATE OR DELETE ON batches
    FOR EACH ROW EXECUTE FUNCTION sensor_append_only();
CREATE OR REPLACE TRIGGER batches_no_truncate BEFORE TRUNCATE ON batches
    FOR EACH STATEMENT EXECUTE FUNCTION sensor_append_only();
CREATE OR REPLACE TRIGGER forks_append_only BEFORE UPDATE OR DELETE ON forks
    FOR EACH ROW EXECUTE FUNCTION sensor_append_only();
CREATE OR REPLACE TRIGGER forks_no_truncate BEFORE TRUNCATE ON forks
    FOR EACH STATEMENT EXECUTE FUNCTION sensor_append_only();
