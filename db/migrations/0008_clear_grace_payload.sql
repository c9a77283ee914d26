-- The purge-sessions job also clears the sealed successor tokens kept for the refresh grace
-- window once the window is over (services/jobs/purge-sessions.ts). They are sealed with a
-- key only the spent refresh token gives, but nothing should stay at rest that is no longer
-- needed. Operator scope only, like the job's other policies (0006_jobs.sql).
CREATE POLICY maintenance_clear ON auth_sessions FOR UPDATE
  USING (app_is_operator()) WITH CHECK (app_is_operator());
