-- Per-recording summaries (docs/recording.md): the list of a tenant's recordings reads one row
-- per recording instead of aggregating every stored event on each call.
--
-- The rows are kept by two statement-level triggers on recording_events, so they change in the
-- same statement, and so the same transaction, as the events they count: the ingest stays one
-- round trip (recording_events_ingest is untouched, whichever version of it runs), the retention
-- purge and any other DELETE keep them right, and a statement that inserts nothing (a retried
-- batch: every event a duplicate) changes nothing. A transition table holds only the rows a
-- statement really inserted or deleted: ON CONFLICT DO NOTHING's skipped duplicates are not in
-- it, so a duplicate is never counted.
--
-- The price is a hot row: concurrent batches of one recording queue on its summary row from
-- their trigger to their commit (a recorder sends one batch at a time, so this is rare). Rows
-- are locked in (tenant_id, recording_id) order by every writer, so two batches spanning the
-- same recordings never deadlock on them.
CREATE TABLE recording_summaries (
  tenant_id uuid NOT NULL,
  recording_id text NOT NULL,
  events bigint NOT NULL CHECK (events > 0),
  first_at timestamptz NOT NULL,
  last_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, recording_id)
);
-- The list: a tenant's recordings, most recent first, keyset-paginated on (last_at, recording_id)
-- (read backwards).
CREATE INDEX recording_summaries_recent_idx ON recording_summaries (tenant_id, last_at, recording_id);

-- Backfill. The migration role owns recording_events but is held to its policies (FORCE), and
-- no tenant is set here: lift FORCE for this one statement. ALTER TABLE locks recording_events
-- until this migration commits, so no ingest slips between the backfill and the triggers.
ALTER TABLE recording_events NO FORCE ROW LEVEL SECURITY;
INSERT INTO recording_summaries (tenant_id, recording_id, events, first_at, last_at)
SELECT tenant_id, recording_id, count(*), min(occurred_at), max(occurred_at)
  FROM recording_events GROUP BY tenant_id, recording_id;
ALTER TABLE recording_events FORCE ROW LEVEL SECURITY;

-- Row-level security, failing closed like every tenant table. The triggers' functions run as
-- this migration's role (SECURITY DEFINER), so that the runtime role needs only SELECT here and
-- cannot write a count of its own; maintenance lets that role, and only it, keep the rows.
-- What they write is derived from rows that already passed recording_events' policy.
ALTER TABLE recording_summaries ENABLE ROW LEVEL SECURITY;
ALTER TABLE recording_summaries FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON recording_summaries
  USING (tenant_id = (SELECT app_tenant_id()))
  WITH CHECK (tenant_id = (SELECT app_tenant_id()));
CREATE POLICY maintenance ON recording_summaries TO CURRENT_USER USING (true) WITH CHECK (true);

CREATE FUNCTION recording_summaries_add() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
  INSERT INTO public.recording_summaries AS s (tenant_id, recording_id, events, first_at, last_at)
  SELECT tenant_id, recording_id, count(*), min(occurred_at), max(occurred_at)
    FROM inserted GROUP BY tenant_id, recording_id ORDER BY tenant_id, recording_id
  ON CONFLICT (tenant_id, recording_id) DO UPDATE
    SET events = s.events + excluded.events,
        first_at = least(s.first_at, excluded.first_at),
        last_at = greatest(s.last_at, excluded.last_at);
  RETURN NULL;
END
$$;

-- Counts go down by what was deleted; the bounds are read again from the events left, two
-- index probes per recording on (tenant_id, recording_id, occurred_at, id). The rows are locked
-- first: the statements after it take a new snapshot (READ COMMITTED, a VOLATILE function), so
-- they see the events of any ingest that held one of these rows until it committed. The events
-- are read under the caller's tenant; where it sees none (a maintenance delete with no tenant
-- set), the bounds stay as they were and only the count moves.
CREATE FUNCTION recording_summaries_remove() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
  PERFORM 1 FROM public.recording_summaries s
    WHERE (s.tenant_id, s.recording_id) IN (SELECT DISTINCT d.tenant_id, d.recording_id FROM deleted d)
    ORDER BY s.tenant_id, s.recording_id
    FOR UPDATE;
  DELETE FROM public.recording_summaries s
   USING (SELECT d.tenant_id, d.recording_id, count(*) AS n FROM deleted d GROUP BY 1, 2) g
   WHERE s.tenant_id = g.tenant_id AND s.recording_id = g.recording_id AND s.events <= g.n;
  UPDATE public.recording_summaries s
     SET events = s.events - g.n,
         first_at = coalesce((SELECT min(e.occurred_at) FROM public.recording_events e WHERE e.tenant_id = s.tenant_id AND e.recording_id = s.recording_id), s.first_at),
         last_at = coalesce((SELECT max(e.occurred_at) FROM public.recording_events e WHERE e.tenant_id = s.tenant_id AND e.recording_id = s.recording_id), s.last_at)
    FROM (SELECT d.tenant_id, d.recording_id, count(*) AS n FROM deleted d GROUP BY 1, 2) g
   WHERE s.tenant_id = g.tenant_id AND s.recording_id = g.recording_id;
  RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION recording_summaries_add(), recording_summaries_remove() FROM PUBLIC;

CREATE TRIGGER recording_summaries_add AFTER INSERT ON recording_events
  REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION recording_summaries_add();
CREATE TRIGGER recording_summaries_remove AFTER DELETE ON recording_events
  REFERENCING OLD TABLE AS deleted FOR EACH STATEMENT EXECUTE FUNCTION recording_summaries_remove();

-- The list reads; the triggers write as the owner. No INSERT, UPDATE or DELETE for the runtime role.
GRANT SELECT ON recording_summaries TO govula_runtime;
