-- 1: the first schema
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    spec TEXT NOT NULL,
    package_name TEXT NOT NULL DEFAULT '',
    package_version TEXT NOT NULL DEFAULT '',
    python TEXT NOT NULL DEFAULT '',
    image_id TEXT NOT NULL DEFAULT '',
    setup_digest TEXT NOT NULL DEFAULT '',
    pyti_version TEXT NOT NULL DEFAULT '',
    accelerator TEXT NOT NULL DEFAULT '',
    agent_version TEXT NOT NULL DEFAULT '',
    resolved TEXT NOT NULL DEFAULT '{}',
    inputs TEXT NOT NULL DEFAULT '{}',
    started_at REAL NOT NULL,
    finished_at REAL,
    outcome TEXT,
    exit_code INTEGER,
    vm_end TEXT NOT NULL DEFAULT '',
    error TEXT NOT NULL DEFAULT '',
    console TEXT NOT NULL DEFAULT '',
    pid INTEGER NOT NULL,
    pid_start TEXT NOT NULL DEFAULT '',
    boot_id TEXT NOT NULL DEFAULT ''
);
CREATE INDEX runs_unfinished ON runs(id) WHERE outcome IS NULL;
CREATE TABLE tests (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    nodeid TEXT NOT NULL,
    outcome TEXT NOT NULL,
    duration REAL NOT NULL,
    report TEXT NOT NULL DEFAULT ''
);
CREATE INDEX tests_run ON tests(run_id);
CREATE TABLE tasks (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    name TEXT NOT NULL,
    outcome TEXT NOT NULL,
    exit_code INTEGER,
    duration REAL,
    counts TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, name)
);
CREATE TABLE outputs (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    task TEXT NOT NULL,
    stream TEXT NOT NULL,
    data BLOB NOT NULL,
    dropped INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX outputs_run ON outputs(run_id);
CREATE TABLE findings (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    task TEXT NOT NULL DEFAULT ''
);
CREATE INDEX findings_run ON findings(run_id);;
