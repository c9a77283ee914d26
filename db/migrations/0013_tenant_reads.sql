-- The reads of the caller's own tenant (GET /api/v1/tenant and its members list) as owner-side
-- functions that verify the context once.
--
-- As plain statements under the policies, the members list verified the signed context four
-- times (its own WHERE, the memberships policy, the users policy and the users policy's
-- helper, which read memberships a second time), and each request planned the join with both
-- tables' policies afresh: some 250 µs of Postgres CPU per request, a third of the tenant
-- read's cost. Here the context is verified once, by app_tenant_id(), and the statement's plan
-- is kept by PL/pgSQL for the connection's life. The functions read as the owner, with the
-- owner_lookup policies (true) in place of the runtime role's, and return only rows of the
-- tenant the verified context names: nothing at all for a context that does not verify, or
-- names no tenant. Both stay STABLE, so they see the transaction's snapshot like any read.

DO $$
BEGIN
  EXECUTE format('CREATE POLICY owner_lookup ON tenants FOR SELECT TO %I USING (true)', current_user);
END
$$;

CREATE FUNCTION tenant_read_tenant()
RETURNS TABLE (id uuid, name text, slug text, plan text, lifecycle text, created_at timestamptz)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  tenant uuid := app_tenant_id();
BEGIN
  IF tenant IS NULL THEN
    RETURN;
  END IF;
  RETURN QUERY SELECT t.id, t.name, t.slug, t.plan, t.lifecycle, t.created_at FROM tenants t WHERE t.id = tenant;
END
$$;

-- created_at is returned for the caller's ORDER BY: the order is the statement's, not the
-- function's.
CREATE FUNCTION tenant_read_members()
RETURNS TABLE (user_id uuid, email text, role text, created_at timestamptz)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  tenant uuid := app_tenant_id();
BEGIN
  IF tenant IS NULL THEN
    RETURN;
  END IF;
  RETURN QUERY SELECT m.user_id, u.email, m.role, m.created_at
    FROM memberships m JOIN users u ON u.id = m.user_id
   WHERE m.tenant_id = tenant;
END
$$;

REVOKE ALL ON FUNCTION tenant_read_tenant(), tenant_read_members() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenant_read_tenant(), tenant_read_members() TO govula_runtime;
