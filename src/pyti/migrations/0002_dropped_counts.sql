-- 2: what the per-run caps dropped
ALTER TABLE runs ADD COLUMN dropped_tests INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN dropped_findings INTEGER NOT NULL DEFAULT 0;
