-- runtools postgres environment, migration 1: runs, settings, output chunks, big event payloads.
-- Applied inside one transaction with search_path set to the environment's schema.
-- `data` holds the whole run record as JSON text (the same as the local SQLite store); the
-- columns beside it are copies kept for indexes.
CREATE TABLE runs (
    seq         BIGSERIAL PRIMARY KEY,
    instance_id TEXT NOT NULL UNIQUE,
    job_id      TEXT NOT NULL,
    run_id      TEXT NOT NULL,
    stage       TEXT NOT NULL,
    status      TEXT,
    created_at  DOUBLE PRECISION NOT NULL,
    ended_at    DOUBLE PRECISION,
    run_key     TEXT,
    tags        JSONB NOT NULL DEFAULT '[]',
    data        TEXT NOT NULL,
    -- server time of the insert: which runs were there before a server restart (leases retaken)
    inserted_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- `ps` and every coordination decision read only active runs: keep them in a small partial index.
CREATE INDEX runs_active ON runs (seq) WHERE stage <> 'ENDED';
CREATE INDEX runs_created ON runs (created_at, seq);
CREATE INDEX runs_job ON runs (job_id, created_at);
CREATE INDEX runs_key ON runs (run_key, seq) WHERE run_key IS NOT NULL;
CREATE INDEX runs_status ON runs (status, created_at);

-- Small keyed settings: disabled job patterns, strict run-key overrides (unlocks), ...
CREATE TABLE settings (
    kind  TEXT NOT NULL,
    key   TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (kind, key)
);

-- Output of runs, as written by the executing host, bounded per run (the oldest chunks go).
CREATE TABLE output_chunks (
    seq         BIGSERIAL PRIMARY KEY,
    instance_id TEXT NOT NULL,
    stream      TEXT NOT NULL,
    off         BIGINT NOT NULL,
    data        BYTEA NOT NULL
);
CREATE INDEX output_chunks_run ON output_chunks (instance_id, seq);

-- Events too big for a NOTIFY payload (8000 bytes): the notification carries the row's id.
CREATE TABLE event_payloads (
    id   BIGSERIAL PRIMARY KEY,
    at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    body TEXT NOT NULL
);
