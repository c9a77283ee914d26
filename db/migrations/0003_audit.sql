-- Tamper-evident audit chains (docs/audit.md).
--
--   audit_log              per tenant: what users did in it
--   tenant_operation_log   per tenant: operations on the tenant (created, plan, contract, lifecycle)
--   operator_audit_events  one global chain: every operator action
--
-- Each chain is a gapless sequence 1, 2, 3, ... in which row n carries prev_hash = hash of
-- row n-1 (64 zeros for row 1) and hash = SHA-256 over the canonical JSON of the row. The
-- rows are appended by audit_append() below, inside the caller's transaction, so a row
-- commits or rolls back with the change it records.

-- Chain rows: one shape, three tables (a table per chain keeps each table's indexes and RLS
-- policy simple, and lets the operator chain live without a tenant_id column).
-- No foreign key to tenants: an audit trail must outlive the tenant it describes, and an
-- FK check would take a KEY SHARE lock on the tenant row in every append.
CREATE TABLE audit_log (
  tenant_id uuid NOT NULL,
  seq bigint NOT NULL CHECK (seq > 0),
  -- Stamped by audit_append at millisecond precision: the hash covers its ISO 8601 form, which
  -- a JavaScript Date reproduces exactly (the CHECK keeps sub-millisecond digits out).
  occurred_at timestamptz NOT NULL CHECK (occurred_at = date_trunc('milliseconds', occurred_at)),
  actor jsonb NOT NULL CHECK (jsonb_typeof(actor) = 'object' AND actor->>'type' IN ('user', 'operator', 'system')),
  action text NOT NULL CHECK (length(action) BETWEEN 1 AND 200),
  target jsonb CHECK (jsonb_typeof(target) = 'object'),
  data jsonb NOT NULL CHECK (jsonb_typeof(data) = 'object'),
  prev_hash text NOT NULL CHECK (prev_hash ~ '^[0-9a-f]{64}$'),
  hash text NOT NULL CHECK (hash ~ '^[0-9a-f]{64}$'),
  -- The fork guard: two appends can never both become row n of one chain.
  PRIMARY KEY (tenant_id, seq)
);
-- GET /api/v1/audit?action= pages through one action, newest first.
CREATE INDEX audit_log_action_idx ON audit_log (tenant_id, action, seq);

CREATE TABLE tenant_operation_log (LIKE audit_log INCLUDING CONSTRAINTS INCLUDING DEFAULTS, PRIMARY KEY (tenant_id, seq));

CREATE TABLE operator_audit_events (
  seq bigint PRIMARY KEY CHECK (seq > 0),
  occurred_at timestamptz NOT NULL CHECK (occurred_at = date_trunc('milliseconds', occurred_at)),
  actor jsonb NOT NULL CHECK (jsonb_typeof(actor) = 'object' AND actor->>'type' IN ('user', 'operator', 'system')),
  action text NOT NULL CHECK (length(action) BETWEEN 1 AND 200),
  target jsonb CHECK (jsonb_typeof(target) = 'object'),
  data jsonb NOT NULL CHECK (jsonb_typeof(data) = 'object'),
  prev_hash text NOT NULL CHECK (prev_hash ~ '^[0-9a-f]{64}$'),
  hash text NOT NULL CHECK (hash ~ '^[0-9a-f]{64}$')
);

-- Signed chain heads: "chain C of tenant T had row `seq` with hash `hash` at issued_at",
-- signed with AUDIT_SIGNING_KEY. `body` is the exact canonical JSON that was signed. A copy
-- kept outside (GET /api/v1/audit/checkpoint) later exposes a truncated tail or a chain
-- recomputed from scratch, which the hashes alone cannot. tenant_id is NULL for the
-- operator chain.
CREATE TABLE audit_checkpoints (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  chain text NOT NULL CHECK (chain IN ('audit_log', 'tenant_operation_log', 'operator_audit_events')),
  tenant_id uuid CHECK ((tenant_id IS NULL) = (chain = 'operator_audit_events')),
  seq bigint NOT NULL CHECK (seq >= 0),
  hash text NOT NULL CHECK (hash ~ '^[0-9a-f]{64}$'),
  issued_at timestamptz NOT NULL,
  key_id text NOT NULL,
  body text NOT NULL,
  signature text NOT NULL
);
CREATE INDEX audit_checkpoints_chain_idx ON audit_checkpoints (chain, tenant_id, seq);

-- Append-only, for everyone: the runtime role is not granted UPDATE, DELETE or TRUNCATE, and
-- this trigger refuses them to the owner and superusers too. Statement-level, so it fires
-- even when no row matches and covers TRUNCATE. ENABLE ALWAYS: it also fires under
-- session_replication_role = replica, so only an explicit ALTER TABLE ... DISABLE TRIGGER
-- (by the owner or a superuser, and visible in the catalog) gets past it.
CREATE FUNCTION audit_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '% on % is not allowed: audit chains are append-only', TG_OP, TG_TABLE_NAME
    USING ERRCODE = 'insufficient_privilege';
END
$$;

DO $$
DECLARE
  t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['audit_log', 'tenant_operation_log', 'operator_audit_events', 'audit_checkpoints'] LOOP
    EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE OR DELETE OR TRUNCATE ON %I FOR EACH STATEMENT EXECUTE FUNCTION audit_reject_change()', t || '_append_only', t);
    EXECUTE format('ALTER TABLE %I ENABLE ALWAYS TRIGGER %I', t, t || '_append_only');
  END LOOP;
END
$$;

-- Row-level security, failing closed like every tenant table (0002_identity.sql). Operators
-- read every chain (the operator verify walks them all); a tenant chain is appended to only
-- in its own tenant's context, the operator chain only in operator context.
ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_log FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_read ON audit_log FOR SELECT
  USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid OR app_is_operator());
CREATE POLICY tenant_append ON audit_log FOR INSERT
  WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);

ALTER TABLE tenant_operation_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_operation_log FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_read ON tenant_operation_log FOR SELECT
  USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid OR app_is_operator());
CREATE POLICY tenant_append ON tenant_operation_log FOR INSERT
  WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);

ALTER TABLE operator_audit_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE operator_audit_events FORCE ROW LEVEL SECURITY;
CREATE POLICY operator_only ON operator_audit_events FOR ALL
  USING (app_is_operator()) WITH CHECK (app_is_operator());

ALTER TABLE audit_checkpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_checkpoints FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_checkpoints
  USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid OR app_is_operator())
  WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid OR app_is_operator());

-- One append, one round trip: take the chain's lock, read its head, stamp the time, hash,
-- insert.
--
-- Serialisation: a transaction-scoped advisory lock per chain (the two-int4 key space, apart
-- from the single-bigint keys of the migration lock), queued first come first served and
-- released at commit or rollback, after the row became visible. The head is read *after*
-- the lock is granted, by a new statement with a new READ COMMITTED snapshot, so it is the
-- previous holder's committed row. (SELECT ... ORDER BY seq DESC LIMIT 1 FOR UPDATE forks
-- the chain instead: a waiter re-checks the old last row, which nobody updated, and links to
-- it as well; and an empty chain has no row to lock.) seq stays gapless: a rolled-back
-- append frees its number. Two chains whose keys' hashtext() collide share a lock, which
-- costs only some waiting. A separate head row per chain, updated by every append, was
-- measured at half the throughput on one busy chain: its dead versions pile up while the
-- queued appenders' snapshots keep them from being pruned.
--
-- The head is the chain's last primary-key entry. enable_sort = off keeps it that way: under
-- row-level security the planner's row estimate for one tenant can be so small (an unanalysed
-- table, a large tenant among many) that a scan of the tenant's rows plus a sort looks
-- cheaper, and every append would read its whole chain.
--
-- Hashing: the application sends p_entry, the canonical JSON (RFC 8785) of {action, actor,
-- data, target}; this function wraps it into the canonical JSON of
--   {"chain":…,"entry":<p_entry>,"occurredAt":"…","prevHash":"…","seq":…,"tenantId":…}
-- (keys in sorted order, values whose text form is fixed) and stores SHA-256 of its UTF-8
-- bytes. Verification (services/audit.ts) rebuilds the same text from the stored columns,
-- so an entry that was not canonical would be reported, never silently accepted.
--
-- SECURITY INVOKER: it runs with the caller's rights and row-level security, so it appends
-- only where the caller's transaction context allows.
CREATE FUNCTION audit_append(p_chain text, p_tenant uuid, p_entry text, OUT out_seq bigint, OUT out_hash text)
LANGUAGE plpgsql VOLATILE SET enable_sort = off AS $$
DECLARE
  entry jsonb := p_entry::jsonb;
  head_seq bigint;
  head_hash text;
  at timestamptz;
  canonical text;
BEGIN
  -- Under REPEATABLE READ the head would come from a snapshot older than the lock: refuse
  -- every time, rather than fail on the primary key only when another append races.
  IF current_setting('transaction_isolation') <> 'read committed' THEN
    RAISE EXCEPTION 'audit_append needs a READ COMMITTED transaction, not %', current_setting('transaction_isolation')
      USING ERRCODE = 'feature_not_supported';
  END IF;
  IF p_chain NOT IN ('audit_log', 'tenant_operation_log', 'operator_audit_events') THEN
    RAISE EXCEPTION 'unknown audit chain %', p_chain USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF (p_chain = 'operator_audit_events') <> (p_tenant IS NULL) THEN
    RAISE EXCEPTION '% %', p_chain, CASE WHEN p_tenant IS NULL THEN 'needs a tenant' ELSE 'is one global chain: pass no tenant' END
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF jsonb_typeof(entry) IS DISTINCT FROM 'object' OR jsonb_typeof(entry->'action') IS DISTINCT FROM 'string'
     OR jsonb_typeof(entry->'actor') IS DISTINCT FROM 'object' OR jsonb_typeof(entry->'data') IS DISTINCT FROM 'object'
     OR coalesce(jsonb_typeof(entry->'target'), 'missing') NOT IN ('object', 'null')
     OR (SELECT count(*) FROM jsonb_object_keys(entry)) <> 4 THEN
    RAISE EXCEPTION 'audit entry must be an object of exactly action, actor, data and target'
      USING ERRCODE = 'invalid_parameter_value';
  END IF;

  IF p_chain = 'audit_log' THEN
    PERFORM pg_advisory_xact_lock(727003001, hashtext(p_tenant::text));
    SELECT l.seq, l.hash INTO head_seq, head_hash FROM audit_log l WHERE l.tenant_id = p_tenant ORDER BY l.seq DESC LIMIT 1;
  ELSIF p_chain = 'tenant_operation_log' THEN
    PERFORM pg_advisory_xact_lock(727003002, hashtext(p_tenant::text));
    SELECT l.seq, l.hash INTO head_seq, head_hash FROM tenant_operation_log l WHERE l.tenant_id = p_tenant ORDER BY l.seq DESC LIMIT 1;
  ELSE
    PERFORM pg_advisory_xact_lock(727003003, 0);
    SELECT l.seq, l.hash INTO head_seq, head_hash FROM operator_audit_events l ORDER BY l.seq DESC LIMIT 1;
  END IF;
  head_seq := coalesce(head_seq, 0);
  head_hash := coalesce(head_hash, repeat('0', 64));

  out_seq := head_seq + 1;
  -- Taken under the lock: occurred_at never decreases along a chain (on one database clock).
  at := date_trunc('milliseconds', clock_timestamp());
  canonical := '{"chain":"' || p_chain || '","entry":' || p_entry
    || ',"occurredAt":"' || to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
    || '","prevHash":"' || head_hash || '","seq":' || out_seq
    || ',"tenantId":' || coalesce('"' || p_tenant::text || '"', 'null') || '}';
  out_hash := encode(sha256(convert_to(canonical, 'UTF8')), 'hex');

  -- The primary key (tenant_id, seq) / (seq) is the fork guard should anything else write rows.
  IF p_chain = 'audit_log' THEN
    INSERT INTO audit_log (tenant_id, seq, occurred_at, actor, action, target, data, prev_hash, hash)
    VALUES (p_tenant, out_seq, at, entry->'actor', entry->>'action', nullif(entry->'target', 'null'), entry->'data', head_hash, out_hash);
  ELSIF p_chain = 'tenant_operation_log' THEN
    INSERT INTO tenant_operation_log (tenant_id, seq, occurred_at, actor, action, target, data, prev_hash, hash)
    VALUES (p_tenant, out_seq, at, entry->'actor', entry->>'action', nullif(entry->'target', 'null'), entry->'data', head_hash, out_hash);
  ELSE
    INSERT INTO operator_audit_events (seq, occurred_at, actor, action, target, data, prev_hash, hash)
    VALUES (out_seq, at, entry->'actor', entry->>'action', nullif(entry->'target', 'null'), entry->'data', head_hash, out_hash);
  END IF;
END
$$;

REVOKE ALL ON FUNCTION audit_append(text, uuid, text), audit_reject_change() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit_append(text, uuid, text) TO govula_runtime;

-- Append and read: nothing else, ever.
GRANT SELECT, INSERT ON audit_log, tenant_operation_log, operator_audit_events, audit_checkpoints TO govula_runtime;
