-- Scheduled jobs: one row per run. The (job, slot) key is the lease: whoever inserts it first
-- runs that tick, whether an in-process scheduler on any replica or an external cron calling
-- /api/internal/cron/:job. The rows are the run history operators read.
CREATE TABLE job_runs (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  job text NOT NULL,
  slot timestamptz NOT NULL,
  trigger text NOT NULL CHECK (trigger IN ('scheduler', 'cron')),
  instance text NOT NULL,
  started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  finished_at timestamptz,
  outcome text NOT NULL DEFAULT 'running' CHECK (outcome IN ('running', 'succeeded', 'failed', 'aborted')),
  error text,
  result jsonb,
  UNIQUE (job, slot)
);
CREATE INDEX job_runs_recent_idx ON job_runs (started_at DESC);

GRANT SELECT, INSERT, UPDATE ON job_runs TO govula_runtime;

-- Jobs run in operator scope (app.operator = 'on'): the session purge may delete any
-- tenant's expired or revoked sessions, and nothing else gains that right.
CREATE POLICY maintenance_purge ON auth_sessions FOR DELETE USING (app_is_operator());
CREATE POLICY maintenance_read ON auth_sessions FOR SELECT USING (app_is_operator());
