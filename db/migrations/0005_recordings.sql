-- Recording mode (docs/recording.md): events a browser recorder sends in batches.
--
-- The browser keeps each event until the backend has acknowledged it, so a batch may arrive
-- more than once (a lost response, a reload, two tabs). The client gives every event a UUID,
-- and the primary key (tenant_id, id) makes a retry store nothing twice: the ingest is one
-- INSERT ... ON CONFLICT DO NOTHING.
CREATE TABLE recording_events (
  -- No foreign key to tenants: its check would take a KEY SHARE lock on the one tenant row for
  -- every inserted event, and concurrent batches of a tenant would then contend on that row
  -- (multixacts). The id comes from a verified session; tenants are never deleted (they are
  -- cancelled), and the retention purge removes a cancelled tenant's events in time.
  tenant_id uuid NOT NULL,
  id uuid NOT NULL,
  -- Client-chosen and part of a URL path: the API lets only [A-Za-z0-9._:-] through. A regex
  -- CHECK here measured ~8 µs per inserted row (a third of the insert): the length only.
  recording_id text NOT NULL CHECK (length(recording_id) BETWEEN 1 AND 128),
  type text NOT NULL CHECK (length(type) BETWEEN 1 AND 100),
  -- Millisecond precision (the service sends no finer): the read cursor carries a JavaScript Date,
  -- which must reproduce the stored value exactly or a page would skip or repeat a row.
  occurred_at timestamptz NOT NULL CHECK (occurred_at = date_trunc('milliseconds', occurred_at)),
  received_at timestamptz NOT NULL DEFAULT now(),
  -- json, not jsonb: the service never looks inside a payload, and storing the text as sent
  -- skips a conversion on every ingested event (measured ~4 µs of ~30) and on every read.
  payload json NOT NULL CHECK (json_typeof(payload) = 'object'),
  PRIMARY KEY (tenant_id, id)
);

-- Reading one recording in order (occurred_at, id), keyset-paginated; also the list's
-- per-recording count and time range.
CREATE INDEX recording_events_recording_idx ON recording_events (tenant_id, recording_id, occurred_at, id);
-- Retention: the oldest events of one tenant, in bounded batches.
CREATE INDEX recording_events_retention_idx ON recording_events (tenant_id, occurred_at);

-- Row-level security, failing closed like every tenant table (0002_identity.sql).
ALTER TABLE recording_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE recording_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON recording_events
  USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
  WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);

-- The ingest: a batch in one round trip (round trips are the hot path's cost, see
-- docs/performance.md), instead of BEGIN + set_config, INSERT, COMMIT. Called on its own, the
-- call is its own transaction, so the transaction-local tenant setting ends with it; inside a
-- caller's transaction it sets that transaction's tenant. The rows come out of one JSON
-- document; the primary key turns every event already stored (a retry, or one id twice in the
-- batch) into nothing, and the count returned is what was stored. SECURITY INVOKER: row-level
-- security checks every row against the tenant set here, as for any runtime statement.
CREATE FUNCTION recording_events_ingest(p_tenant uuid, p_events json) RETURNS integer
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  stored integer;
BEGIN
  IF p_tenant IS NULL THEN
    RAISE EXCEPTION 'recording_events_ingest needs a tenant' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  PERFORM set_config('app.tenant_id', p_tenant::text, true);
  INSERT INTO recording_events (tenant_id, id, recording_id, type, occurred_at, payload)
  SELECT p_tenant, e.id, e.recording_id, e.type, e.occurred_at, e.payload
    FROM json_to_recordset(p_events) AS e(id uuid, recording_id text, type text, occurred_at timestamptz, payload json)
  ON CONFLICT (tenant_id, id) DO NOTHING;
  GET DIAGNOSTICS stored = ROW_COUNT;
  RETURN stored;
END
$$;
REVOKE ALL ON FUNCTION recording_events_ingest(uuid, json) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION recording_events_ingest(uuid, json) TO govula_runtime;

-- No UPDATE: an event, once stored, is what the browser sent. DELETE is the retention purge,
-- which runs per tenant under the same policy.
GRANT SELECT, INSERT, DELETE ON recording_events TO govula_runtime;
