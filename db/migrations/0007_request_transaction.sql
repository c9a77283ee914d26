-- The auth lookup also sets the session's tenant for the rest of the transaction, so a read
-- can run `BEGIN; SELECT * FROM auth_resolve_access(…)` as one round trip and then query
-- under that tenant's row-level security in the same transaction (plugins/auth.ts): one
-- round trip fewer on every tenant read. `true` keeps both settings local to the transaction;
-- called outside one (autocommit), they end with the statement as before.
CREATE OR REPLACE FUNCTION auth_resolve_access(p_user uuid, p_hash bytea, p_idle interval)
RETURNS TABLE (session_id uuid, family_id uuid, user_id uuid, email text, is_operator boolean, tenant_id uuid, role text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  found_id uuid;
  touched timestamptz;
BEGIN
  PERFORM set_config('app.user_id', p_user::text, true);
  SELECT s.id, s.family_id, s.user_id, u.email, u.is_operator, s.tenant_id, m.role, s.last_used_at
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
    RETURN;
  END IF;
  IF touched < now() - interval '1 minute' THEN
    UPDATE auth_sessions a SET last_used_at = now(), idle_expires_at = least(now() + p_idle, a.absolute_expires_at)
    WHERE a.id = found_id;
  END IF;
  PERFORM set_config('app.tenant_id', coalesce(tenant_id::text, ''), true);
  session_id := found_id;
  RETURN NEXT;
END
$$;
