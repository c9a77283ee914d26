-- Accounts, tenants, memberships and sessions.
--
-- Request context lives in transaction-local settings (set_config(..., true)), so it can
-- never leak to the next user of a pooled connection:
--   app.tenant_id  the tenant a request acts in (every tenant table's policy keys on it)
--   app.user_id    the authenticated user: sees their own memberships and sessions across
--                  tenants (login lists a user's tenants before one is chosen)
--   app.operator   'on' for operator sessions, which administer every tenant
-- Unset settings read as NULL, and NULL matches nothing: the policies fail closed.

CREATE FUNCTION app_tenant_id() RETURNS uuid LANGUAGE sql STABLE PARALLEL SAFE
  AS $$ SELECT nullif(current_setting('app.tenant_id', true), '')::uuid $$;
CREATE FUNCTION app_user_id() RETURNS uuid LANGUAGE sql STABLE PARALLEL SAFE
  AS $$ SELECT nullif(current_setting('app.user_id', true), '')::uuid $$;
CREATE FUNCTION app_is_operator() RETURNS boolean LANGUAGE sql STABLE PARALLEL SAFE
  AS $$ SELECT coalesce(current_setting('app.operator', true), '') = 'on' $$;

-- Users are global (one login, many tenants). Emails are unique case-insensitively.
CREATE TABLE users (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  email text NOT NULL CHECK (length(email) <= 254),
  password_hash text NOT NULL,
  is_operator boolean NOT NULL DEFAULT false,
  disabled_at timestamptz,
  failed_logins integer NOT NULL DEFAULT 0,
  failed_window_start timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  password_changed_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

CREATE TABLE tenants (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
  slug text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$'),
  plan text NOT NULL DEFAULT 'free',
  lifecycle text NOT NULL DEFAULT 'trial'
    CHECK (lifecycle IN ('trial', 'active', 'past_due', 'suspended', 'cancelled')),
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE memberships (
  tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  role text NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, user_id)
);
CREATE INDEX memberships_user_idx ON memberships (user_id);

-- One row per issued token pair. A login starts a family; every refresh spends its row
-- (rotated_at, successor_id) and inserts the next one with parent_id pointing back. The
-- family id is the "session" users see and revoke; revoking it revokes every row in it.
CREATE TABLE auth_sessions (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  family_id uuid NOT NULL,
  parent_id uuid REFERENCES auth_sessions (id) ON DELETE SET NULL,
  user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  tenant_id uuid REFERENCES tenants (id) ON DELETE CASCADE, -- NULL: an operator session
  access_token_hash bytea NOT NULL UNIQUE,
  refresh_token_hash bytea NOT NULL UNIQUE,
  access_expires_at timestamptz NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  last_used_at timestamptz NOT NULL DEFAULT now(),
  idle_expires_at timestamptz NOT NULL,
  absolute_expires_at timestamptz NOT NULL,
  rotated_at timestamptz,
  successor_id uuid REFERENCES auth_sessions (id) ON DELETE SET NULL,
  -- The successor's tokens, encrypted under a key derived from this row's refresh token: a
  -- client replaying the spent token within the grace window (a lost response, racing tabs)
  -- gets the same successor back, and nobody else can read it.
  grace_payload bytea,
  revoked_at timestamptz,
  revoked_reason text,
  ip inet,
  user_agent text CHECK (length(user_agent) <= 512)
);
CREATE INDEX auth_sessions_family_idx ON auth_sessions (family_id);
CREATE INDEX auth_sessions_user_idx ON auth_sessions (user_id) WHERE revoked_at IS NULL;
CREATE INDEX auth_sessions_expiry_idx ON auth_sessions (absolute_expires_at);

-- Row-level security: ENABLE + FORCE on every table with tenant data.
ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenants
  USING (id = nullif(current_setting('app.tenant_id', true), '')::uuid
         OR app_is_operator()
         OR id IN (SELECT m.tenant_id FROM memberships m WHERE m.user_id = app_user_id()))
  WITH CHECK (id = nullif(current_setting('app.tenant_id', true), '')::uuid OR app_is_operator());

ALTER TABLE memberships ENABLE ROW LEVEL SECURITY;
ALTER TABLE memberships FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON memberships
  USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid
         OR user_id = app_user_id()
         OR app_is_operator())
  WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);

ALTER TABLE auth_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE auth_sessions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON auth_sessions
  USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid
         OR user_id = app_user_id())
  WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid
              OR user_id = app_user_id());

-- Bearer lookup, one round trip: the token's user id prefix sets app.user_id (so row-level
-- security applies as that user), then the live session for the hash is returned with the
-- member's role, and its idle expiry is extended at most once a minute (a write per request
-- would cost more than the lookup). SECURITY INVOKER: it runs with the caller's rights.
CREATE FUNCTION auth_resolve_access(p_user uuid, p_hash bytea, p_idle interval)
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
  session_id := found_id;
  RETURN NEXT;
END
$$;

-- The runtime role reads and writes rows; it never owns, alters or drops anything.
GRANT EXECUTE ON FUNCTION app_tenant_id(), app_user_id(), app_is_operator(), auth_resolve_access(uuid, bytea, interval) TO govula_runtime;
GRANT SELECT, INSERT, UPDATE ON users TO govula_runtime;
GRANT SELECT, INSERT, UPDATE ON tenants TO govula_runtime;
GRANT SELECT, INSERT, UPDATE, DELETE ON memberships TO govula_runtime;
GRANT SELECT, INSERT, UPDATE, DELETE ON auth_sessions TO govula_runtime;
