-- runtools local environment, schema version 1.
-- `data` holds the whole run record as JSON; the columns beside it are copies kept for indexes.
CREATE TABLE IF NOT EXISTS runs (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id TEXT NOT NULL UNIQUE,
    job_id      TEXT NOT NULL,
    run_id      TEXT NOT NULL,
    stage       TEXT NOT NULL,
    status      TEXT,
    created_at  REAL NOT NULL,
    ended_at    REAL,
    run_key     TEXT,
    tags        TEXT NOT NULL DEFAULT '[]',
    data        TEXT NOT NULL
);
-- `ps` and every coordination decision read only active runs: keep them in a small partial index.
CREATE INDEX IF NOT EXISTS runs_active ON runs(seq) WHERE stage != 'ENDED';
CREATE INDEX IF NOT EXISTS runs_created ON runs(created_at);
CREATE INDEX IF NOT EXISTS runs_job ON runs(job_id, created_at);
CREATE INDEX IF NOT EXISTS runs_key ON runs(run_key, seq) WHERE run_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS runs_status ON runs(status, created_at);

-- Small keyed settings: disabled job patterns, strict run-key overrides (unlocks), ...
CREATE TABLE IF NOT EXISTS settings (
    kind  TEXT NOT NULL,
    key   TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (kind, key)
);
