-- A request context the runtime role cannot forge.
--
-- Until now the context was three settings (app.tenant_id, app.user_id, app.operator) that
-- any statement of the runtime role could set with set_config: one SQL injection would have
-- read every tenant. Now the context is one setting, app.context, holding
--   <tenant uuid or empty>:<user uuid or empty>:<1 operator | 0>:<expires>/<HMAC-SHA256 of that, hex>
-- (tenant:user:flag:expires, expires in Unix seconds)
-- and the policies' helper functions (app_tenant_id(), app_user_id(), app_is_operator())
-- answer from it only when the MAC verifies; otherwise every helper reads NULL/false and the
-- policies fail closed, as they did for unset settings. The key lives in a table only the
-- owner role reads. Two parties sign:
--   * the database itself, in auth_resolve_access, for a session it has just verified;
--   * the service, which reads the key once through the owner connection (MIGRATION_DATABASE_URL)
--     at boot (services/request-context.ts): it signs what it decided after checking a password,
--     a refresh token, or that a job runs. A statement sent over the runtime login can read
--     neither the key nor a context it was not given.
-- A context can be replayed only by whoever already holds it (it names its tenant and user),
-- and only until it expires: a transaction must start within five minutes of the signing, so a
-- context seen in another connection's statement text (pg_stat_activity) is soon worth nothing.

CREATE TABLE request_context_key (
  singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  key bytea NOT NULL CHECK (length(key) = 32),
  -- HMAC's inner and outer blocks, precomputed: verifying is then two sha256() calls.
  ipad bytea NOT NULL CHECK (length(ipad) = 64),
  opad bytea NOT NULL CHECK (length(opad) = 64)
);
REVOKE ALL ON request_context_key FROM PUBLIC;

DO $$
DECLARE
  -- gen_random_uuid() draws from the server's strong random source: two give 244 random bits.
  k bytea := sha256(uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()));
  block bytea := k || decode(repeat('00', 32), 'hex');
  i bytea := block;
  o bytea := block;
BEGIN
  FOR n IN 0..63 LOOP
    i := set_byte(i, n, get_byte(block, n) # 54);  -- 0x36
    o := set_byte(o, n, get_byte(block, n) # 92);  -- 0x5c
  END LOOP;
  INSERT INTO request_context_key (key, ipad, opad) VALUES (k, i, o);
END
$$;

-- A signed context, for the database's own use (auth_resolve_access) and for owner-role
-- tools (npm run audit:verify). Owner only.
CREATE FUNCTION app_context_sign(p_tenant uuid, p_user uuid, p_operator boolean, p_valid_s integer DEFAULT 300) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  payload text := coalesce(p_tenant::text, '') || ':' || coalesce(p_user::text, '') || ':' || CASE WHEN p_operator THEN '1' ELSE '0' END
    || ':' || (floor(extract(epoch FROM now())) + p_valid_s)::bigint;
  k record;
BEGIN
  SELECT ipad, opad INTO k FROM public.request_context_key;
  RETURN payload || '/' || encode(sha256(k.opad || sha256(k.ipad || convert_to(payload, 'UTF8'))), 'hex');
END
$$;
REVOKE ALL ON FUNCTION app_context_sign(uuid, uuid, boolean, integer) FROM PUBLIC;

-- The helpers every policy calls. SECURITY DEFINER so that they can read the key; the
-- policies call them as (SELECT app_…()), evaluated once per statement, not once per row.
-- Each verifies by itself, the same few lines three times: a nested plpgsql call per helper
-- cost the members read some 120 µs of Postgres CPU, the inline check about nothing.
-- Verified: the MAC matches the part before '/', and the expiry (field 4) is after now(), the
-- transaction's start (a transaction that began in time stays in its context).
CREATE OR REPLACE FUNCTION app_tenant_id() RETURNS uuid
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  ctx text := current_setting('app.context', true);
  payload text := split_part(ctx, '/', 1);
  k record;
BEGIN
  IF ctx IS NULL OR ctx = '' THEN RETURN NULL; END IF;
  SELECT ipad, opad INTO k FROM public.request_context_key;
  IF encode(sha256(k.opad || sha256(k.ipad || convert_to(payload, 'UTF8'))), 'hex') = split_part(ctx, '/', 2)
     AND split_part(payload, ':', 4) ~ '^[0-9]{1,12}$' AND split_part(payload, ':', 4)::bigint > extract(epoch FROM now()) THEN
    RETURN nullif(split_part(payload, ':', 1), '')::uuid;
  END IF;
  RETURN NULL;
END
$$;
CREATE OR REPLACE FUNCTION app_user_id() RETURNS uuid
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  ctx text := current_setting('app.context', true);
  payload text := split_part(ctx, '/', 1);
  k record;
BEGIN
  IF ctx IS NULL OR ctx = '' THEN RETURN NULL; END IF;
  SELECT ipad, opad INTO k FROM public.request_context_key;
  IF encode(sha256(k.opad || sha256(k.ipad || convert_to(payload, 'UTF8'))), 'hex') = split_part(ctx, '/', 2)
     AND split_part(payload, ':', 4) ~ '^[0-9]{1,12}$' AND split_part(payload, ':', 4)::bigint > extract(epoch FROM now()) THEN
    RETURN nullif(split_part(payload, ':', 2), '')::uuid;
  END IF;
  RETURN NULL;
END
$$;
CREATE OR REPLACE FUNCTION app_is_operator() RETURNS boolean
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  ctx text := current_setting('app.context', true);
  payload text := split_part(ctx, '/', 1);
  k record;
BEGIN
  IF ctx IS NULL OR ctx = '' THEN RETURN false; END IF;
  SELECT ipad, opad INTO k FROM public.request_context_key;
  RETURN encode(sha256(k.opad || sha256(k.ipad || convert_to(payload, 'UTF8'))), 'hex') = split_part(ctx, '/', 2)
     AND split_part(payload, ':', 4) ~ '^[0-9]{1,12}$' AND split_part(payload, ':', 4)::bigint > extract(epoch FROM now())
     AND split_part(payload, ':', 3) = '1';
END
$$;

-- The bearer lookup, now the one place the database vouches for a session by itself: once the
-- hash matched a live session it leaves the transaction in that session's tenant — and only
-- there: no user scope, so a read that follows sees exactly what withTenant would. Nothing
-- found: no context at all. SECURITY DEFINER to sign; it reads as the owner, whom the
-- owner_lookup policies below let through (it finds rows by token hash and user only).
DO $$
BEGIN
  -- Row-level security is forced on the owner too: these let the owner's own functions (this
  -- lookup, the members list's helper) read without evaluating a context per row.
  EXECUTE format('CREATE POLICY owner_lookup ON auth_sessions TO %I USING (true) WITH CHECK (true)', current_user);
  EXECUTE format('CREATE POLICY owner_lookup ON memberships TO %I USING (true) WITH CHECK (true)', current_user);
END
$$;
CREATE OR REPLACE FUNCTION auth_resolve_access(p_user uuid, p_hash bytea, p_idle interval)
RETURNS TABLE (session_id uuid, family_id uuid, user_id uuid, email text, is_operator boolean, tenant_id uuid, role text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  found_id uuid;
  touched timestamptz;
BEGIN
  -- Only a session in no tenant acts as an operator: a session row for an operator in some
  -- tenant (which only a forged INSERT could make) is a tenant session like any other.
  SELECT s.id, s.family_id, s.user_id, u.email, u.is_operator AND s.tenant_id IS NULL, s.tenant_id, m.role, s.last_used_at
    INTO found_id, family_id, user_id, email, is_operator, tenant_id, role, touched
  FROM auth_sessions s
  JOIN users u ON u.id = s.user_id
  LEFT JOIN memberships m ON m.tenant_id = s.tenant_id AND m.user_id = s.user_id
  WHERE s.access_token_hash = p_hash AND s.user_id = p_user
    AND s.revoked_at IS NULL AND s.rotated_at IS NULL
    AND s.access_expires_at > now() AND s.idle_expires_at > now() AND s.absolute_expires_at > now()
    AND u.disabled_at IS NULL
    AND (s.tenant_id IS NULL OR m.role IS NOT NULL);
  IF found_id IS NULL THEN
    PERFORM set_config('app.context', '', true);
    RETURN;
  END IF;
  IF touched < now() - interval '1 minute' THEN
    UPDATE auth_sessions a SET last_used_at = now(), idle_expires_at = least(now() + p_idle, a.absolute_expires_at)
    WHERE a.id = found_id;
  END IF;
  PERFORM set_config('app.context', CASE WHEN tenant_id IS NULL THEN '' ELSE app_context_sign(tenant_id, NULL, false) END, true);
  session_id := found_id;
  RETURN NEXT;
END
$$;

-- Every policy reads the context through the helpers (the inline current_setting() reads of
-- the old settings are gone), each helper wrapped in a scalar subquery: an InitPlan, computed
-- once per statement.
ALTER POLICY tenant_isolation ON tenants
  USING (id = (SELECT app_tenant_id()) OR (SELECT app_is_operator())
         OR id IN (SELECT m.tenant_id FROM memberships m WHERE m.user_id = (SELECT app_user_id())))
  WITH CHECK (id = (SELECT app_tenant_id()) OR (SELECT app_is_operator()));
ALTER POLICY tenant_isolation ON memberships
  USING (tenant_id = (SELECT app_tenant_id()) OR user_id = (SELECT app_user_id()) OR (SELECT app_is_operator()))
  WITH CHECK (tenant_id = (SELECT app_tenant_id()));
ALTER POLICY maintenance_purge ON auth_sessions USING ((SELECT app_is_operator()));
ALTER POLICY maintenance_read ON auth_sessions USING ((SELECT app_is_operator()));
ALTER POLICY maintenance_clear ON auth_sessions USING ((SELECT app_is_operator())) WITH CHECK ((SELECT app_is_operator()));
ALTER POLICY tenant_read ON audit_log USING (tenant_id = (SELECT app_tenant_id()) OR (SELECT app_is_operator()));
ALTER POLICY tenant_append ON audit_log WITH CHECK (tenant_id = (SELECT app_tenant_id()));
ALTER POLICY tenant_read ON tenant_operation_log USING (tenant_id = (SELECT app_tenant_id()) OR (SELECT app_is_operator()));
ALTER POLICY tenant_append ON tenant_operation_log WITH CHECK (tenant_id = (SELECT app_tenant_id()));
ALTER POLICY operator_only ON operator_audit_events USING ((SELECT app_is_operator())) WITH CHECK ((SELECT app_is_operator()));
ALTER POLICY tenant_isolation ON audit_checkpoints
  USING (tenant_id = (SELECT app_tenant_id()) OR (SELECT app_is_operator()))
  WITH CHECK (tenant_id = (SELECT app_tenant_id()) OR (SELECT app_is_operator()));
ALTER POLICY tenant_isolation ON tenant_contracts
  USING (tenant_id = (SELECT app_tenant_id()) OR (SELECT app_is_operator()))
  WITH CHECK (tenant_id = (SELECT app_tenant_id()) OR (SELECT app_is_operator()));
ALTER POLICY tenant_isolation ON recording_events
  USING (tenant_id = (SELECT app_tenant_id()))
  WITH CHECK (tenant_id = (SELECT app_tenant_id()));

-- Audit rows only through audit_append: the runtime role keeps SELECT on the chains and loses
-- INSERT, so a row cannot be written with a hash of its choosing. audit_append runs as the
-- owner (still under the forced policies: it appends only where the caller's verified
-- context allows). Checkpoints stay a plain INSERT: each is signed by the service's key and
-- verified against it, so a forged one is reported, not believed.
REVOKE INSERT ON audit_log, tenant_operation_log, operator_audit_events FROM govula_runtime;
ALTER FUNCTION audit_append(text, uuid, text) SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp;

-- The ingest took its tenant as a parameter and set it itself: a way around the context. It
-- now takes the signed context the service made for the session's tenant (still one round
-- trip) and stores events for the tenant that context names, and only when it verifies.
DROP FUNCTION recording_events_ingest(uuid, json);
CREATE FUNCTION recording_events_ingest(p_context text, p_events json) RETURNS integer
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  tenant uuid;
  stored integer;
BEGIN
  PERFORM set_config('app.context', p_context, true);
  tenant := app_tenant_id();
  IF tenant IS NULL THEN
    RAISE EXCEPTION 'recording_events_ingest needs a verified tenant context' USING ERRCODE = 'insufficient_privilege';
  END IF;
  INSERT INTO recording_events (tenant_id, id, recording_id, type, occurred_at, payload)
  SELECT tenant, e.id, e.recording_id, e.type, e.occurred_at, e.payload
    FROM json_to_recordset(p_events) AS e(id uuid, recording_id text, type text, occurred_at timestamptz, payload json)
  ON CONFLICT (tenant_id, id) DO NOTHING;
  GET DIAGNOSTICS stored = ROW_COUNT;
  RETURN stored;
END
$$;
REVOKE ALL ON FUNCTION recording_events_ingest(text, json) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION recording_events_ingest(text, json) TO govula_runtime;

-- What a statement in some tenant's context may still write, narrowed to what the code does
-- there (the rest of the row-level scope stays as it was):
-- * sessions are created only as their own user (login, sign-up and refresh run in the user's
--   signed scope), so a tenant context cannot mint a session for a colleague or an operator;
--   and of a session row only its end can change (revocation, rotation): never its token
--   hashes, owner, tenant or expiry (the lookup extends idle expiry as the owner role);
ALTER POLICY tenant_isolation ON auth_sessions
  USING (tenant_id = (SELECT app_tenant_id()) OR user_id = (SELECT app_user_id()))
  WITH CHECK (user_id = (SELECT app_user_id()) OR (tenant_id = (SELECT app_tenant_id()) AND revoked_at IS NOT NULL));
REVOKE UPDATE ON auth_sessions FROM govula_runtime;
GRANT UPDATE (revoked_at, revoked_reason, rotated_at, successor_id, grace_payload) ON auth_sessions TO govula_runtime;
-- * a tenant's plan, lifecycle and contract are the operator's to change (plan changes,
--   contracts and lifecycle transitions all run in operator scope): a tenant context reads
--   them, and may create its own tenant row (sign-up), nothing more;
DROP POLICY tenant_isolation ON tenants;
CREATE POLICY tenant_read ON tenants FOR SELECT
  USING (id = (SELECT app_tenant_id()) OR (SELECT app_is_operator())
         OR id IN (SELECT m.tenant_id FROM memberships m WHERE m.user_id = (SELECT app_user_id())));
CREATE POLICY tenant_create ON tenants FOR INSERT WITH CHECK (id = (SELECT app_tenant_id()) OR (SELECT app_is_operator()));
CREATE POLICY operator_change ON tenants FOR UPDATE USING ((SELECT app_is_operator())) WITH CHECK ((SELECT app_is_operator()));
DROP POLICY tenant_isolation ON tenant_contracts;
CREATE POLICY tenant_read ON tenant_contracts FOR SELECT USING (tenant_id = (SELECT app_tenant_id()) OR (SELECT app_is_operator()));
CREATE POLICY operator_change ON tenant_contracts FOR ALL USING ((SELECT app_is_operator())) WITH CHECK ((SELECT app_is_operator()));
-- * job leases and their history are the jobs' (operator scope): a tenant context can neither
--   take a future slot (which would stop the job) nor rewrite an outcome.
ALTER TABLE job_runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE job_runs FORCE ROW LEVEL SECURITY;
CREATE POLICY jobs_only ON job_runs USING ((SELECT app_is_operator())) WITH CHECK ((SELECT app_is_operator()));

-- Who sees a user: itself, operators, and the members of the context's tenant. The last was a
-- subquery on memberships under memberships' own policy, evaluated for every statement that
-- reads users (the members list above all): the ids now come from one owner-side read.
CREATE FUNCTION app_tenant_user_ids() RETURNS uuid[]
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  tenant uuid := public.app_tenant_id();
BEGIN
  IF tenant IS NULL THEN
    RETURN '{}';
  END IF;
  RETURN ARRAY(SELECT m.user_id FROM public.memberships m WHERE m.tenant_id = tenant);
END
$$;
REVOKE ALL ON FUNCTION app_tenant_user_ids() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app_tenant_user_ids() TO govula_runtime;
-- The tenant's members first: a read that finds its rows there never computes the other two.
ALTER POLICY account_visibility ON users
  USING (id = ANY ((SELECT app_tenant_user_ids())::uuid[]) OR id = (SELECT app_user_id()) OR (SELECT app_is_operator()));
