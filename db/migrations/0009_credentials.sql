-- Credentials: failed attempts per (email, client address), and the users table narrowed to
-- what the runtime role needs (docs/auth.md, "Brute force" and "Who sees what on users").
--
-- Failures were one counter per account: 100 wrong guesses from anywhere locked the owner out
-- for the rest of the hour, and a locked registered email answered 429 where an unknown one
-- answered 401. They are now counted per (email hash, client), for unknown emails too, so a
-- limit never depends on the account existing, and the account-wide ceiling refuses only the
-- clients that have failed on that email themselves.
CREATE TABLE login_failures (
  -- sha256 of the normalised email: the same key whether or not an account has it.
  email_hash bytea NOT NULL CHECK (length(email_hash) = 32),
  -- The client address, an IPv6 client's /64 (services/login-throttle.ts), or 'unknown'.
  client text NOT NULL CHECK (length(client) BETWEEN 1 AND 64),
  failures integer NOT NULL CHECK (failures > 0),
  -- A fixed window of one hour from the first failure.
  window_start timestamptz NOT NULL,
  PRIMARY KEY (email_hash, client)
);
CREATE INDEX login_failures_window_idx ON login_failures (window_start);
-- Only the functions below touch it.
REVOKE ALL ON login_failures FROM PUBLIC;

ALTER TABLE users DROP COLUMN failed_logins, DROP COLUMN failed_window_start;

-- Who sees which users: themselves, the members of the tenant the context acts in (the
-- members list), and operators. Forced, so the owner is held to a policy too: the one below,
-- which lets it (migrations, operator creation and the SECURITY DEFINER functions of this
-- file) see every row, as it could by switching row-level security off anyway.
ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE users FORCE ROW LEVEL SECURITY;
CREATE POLICY account_visibility ON users FOR SELECT
  USING (id = (SELECT app_user_id())
         OR (SELECT app_is_operator())
         OR id IN (SELECT m.user_id FROM memberships m WHERE m.tenant_id = (SELECT app_tenant_id())));
DO $$
BEGIN
  EXECUTE format('CREATE POLICY owner_maintenance ON users TO %I USING (true) WITH CHECK (true)',
    (SELECT tableowner FROM pg_tables WHERE schemaname = 'public' AND tablename = 'users'));
END
$$;

-- The runtime role reads four columns and writes none: no is_operator to set, no password
-- hash to read in bulk or overwrite. Accounts are created and hashes read and stored by the
-- functions below only.
REVOKE ALL ON users FROM govula_runtime;
GRANT SELECT (id, email, is_operator, disabled_at) ON users TO govula_runtime;

-- One credential attempt (a login, or the current password of a password change), taken from
-- the budgets before the password is verified, so a burst of concurrent guesses cannot all
-- pass a check made before any of them was counted. Verdicts:
--   refused  this client has p_max_client failures on this email in its window, or the email
--            has p_max_account failures in the last hour and this client is one of those that
--            failed: retry_after_s is the rest of the client's window. Nothing else is returned.
--   slowed   the email is past p_max_account but this client has not failed on it: it is
--            verified (the caller waits first). The attempt is counted.
--   allowed  counted; the account's row, if there is one, for the caller to verify.
-- p_email is normalised by the caller (trimmed, lower-cased); an unknown email takes the same
-- path and returns the same verdicts with no account.
-- p_proof is the service's word for exactly this email, client and these limits (the HMAC of
-- services/request-context.ts's credentialProof, under the key of request_context_key, made in
-- 0012): without it a statement could ask for any account's hash, with limits of its choosing.
-- No proof, no row and nothing counted. Every call deletes up to two rows whose
-- window is over, so the table never holds much more than the last hour's failures.
CREATE FUNCTION auth_credential_attempt(p_proof text, p_email text, p_client text, p_max_client integer, p_max_account integer)
RETURNS TABLE (verdict text, retry_after_s integer, user_id uuid, email text, password_hash text, is_operator boolean, disabled boolean)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  email_key bytea := sha256(convert_to(p_email, 'UTF8'));
  expires text := split_part(p_proof, '/', 1);
  k record;
  mine integer;
  mine_since timestamptz;
  everyone integer;
BEGIN
  SELECT ipad, opad INTO k FROM public.request_context_key;
  IF expires !~ '^[0-9]{1,12}$' OR expires::bigint <= extract(epoch FROM now())
     OR encode(sha256(k.opad || sha256(k.ipad || convert_to('credential|' || encode(email_key, 'hex') || '|' || p_client || '|'
          || p_max_client || '|' || p_max_account || '|' || expires, 'UTF8'))), 'hex') IS DISTINCT FROM split_part(p_proof, '/', 2) THEN
    RAISE EXCEPTION 'auth_credential_attempt needs the service''s proof for this attempt' USING ERRCODE = 'insufficient_privilege';
  END IF;
  -- Attempts on one email queue here (a statement's worth), so the budgets are exact.
  PERFORM pg_advisory_xact_lock(727009002, hashtext(encode(email_key, 'hex')));
  DELETE FROM login_failures f WHERE f.ctid = ANY (ARRAY(
    SELECT o.ctid FROM login_failures o WHERE o.window_start <= now() - interval '1 hour' LIMIT 2 FOR UPDATE SKIP LOCKED));

  SELECT f.failures, f.window_start INTO mine, mine_since
    FROM login_failures f WHERE f.email_hash = email_key AND f.client = p_client AND f.window_start > now() - interval '1 hour';
  SELECT coalesce(sum(f.failures), 0)::int INTO everyone
    FROM login_failures f WHERE f.email_hash = email_key AND f.window_start > now() - interval '1 hour';
  IF coalesce(mine, 0) >= p_max_client OR (everyone >= p_max_account AND coalesce(mine, 0) > 0) THEN
    verdict := 'refused';
    retry_after_s := greatest(1, ceil(extract(epoch FROM mine_since + interval '1 hour' - now())))::int;
    RETURN NEXT;
    RETURN;
  END IF;

  INSERT INTO login_failures AS f (email_hash, client, failures, window_start) VALUES (email_key, p_client, 1, now())
  ON CONFLICT (email_hash, client) DO UPDATE SET
    failures = CASE WHEN f.window_start > now() - interval '1 hour' THEN f.failures + 1 ELSE 1 END,
    window_start = CASE WHEN f.window_start > now() - interval '1 hour' THEN f.window_start ELSE now() END;
  verdict := CASE WHEN everyone >= p_max_account THEN 'slowed' ELSE 'allowed' END;
  SELECT u.id, u.email, u.password_hash, u.is_operator, u.disabled_at IS NOT NULL
    INTO user_id, email, password_hash, is_operator, disabled
    FROM users u WHERE lower(u.email) = p_email;
  RETURN NEXT;
END
$$;

-- A verified password gives back the failures of its client on its account. Only for the user
-- the (verified) context names.
CREATE FUNCTION auth_credential_verified(p_client text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  account text;
BEGIN
  SELECT lower(u.email) INTO account FROM users u WHERE u.id = app_user_id();
  IF account IS NULL THEN
    RAISE EXCEPTION 'auth_credential_verified needs a verified user context' USING ERRCODE = 'insufficient_privilege';
  END IF;
  DELETE FROM login_failures f WHERE f.email_hash = sha256(convert_to(account, 'UTF8')) AND f.client = p_client;
END
$$;

-- Stores a new hash for the user the (verified) context names: a rehash at login
-- (p_changed false) or a password change.
CREATE FUNCTION auth_store_password_hash(p_hash text, p_changed boolean) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
  IF p_hash IS NULL OR p_hash NOT LIKE '$argon2id$%' THEN
    RAISE EXCEPTION 'auth_store_password_hash takes an argon2id hash' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  UPDATE users u SET password_hash = p_hash, password_changed_at = CASE WHEN p_changed THEN now() ELSE u.password_changed_at END
   WHERE u.id = app_user_id();
  IF NOT FOUND THEN
    RAISE EXCEPTION 'auth_store_password_hash needs a verified user context' USING ERRCODE = 'insufficient_privilege';
  END IF;
END
$$;

-- Sign-up: a new account, never an operator. False when the email is taken.
CREATE FUNCTION auth_create_user(p_id uuid, p_email text, p_hash text) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
  IF p_hash IS NULL OR p_hash NOT LIKE '$argon2id$%' THEN
    RAISE EXCEPTION 'auth_create_user takes an argon2id hash' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  INSERT INTO users (id, email, password_hash) VALUES (p_id, p_email, p_hash) ON CONFLICT ((lower(email))) DO NOTHING;
  RETURN FOUND;
END
$$;

-- Adding a member names a user who is not (yet) visible: one exact email, and only from a
-- (verified) tenant context.
CREATE FUNCTION auth_user_by_email(p_email text) RETURNS TABLE (id uuid, email text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
  IF app_tenant_id() IS NULL THEN
    RAISE EXCEPTION 'auth_user_by_email needs a tenant context' USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN QUERY SELECT u.id, u.email FROM users u WHERE lower(u.email) = p_email;
END
$$;

REVOKE ALL ON FUNCTION auth_credential_attempt(text, text, text, integer, integer), auth_credential_verified(text),
  auth_store_password_hash(text, boolean), auth_create_user(uuid, text, text), auth_user_by_email(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION auth_credential_attempt(text, text, text, integer, integer), auth_credential_verified(text),
  auth_store_password_hash(text, boolean), auth_create_user(uuid, text, text), auth_user_by_email(text) TO govula_runtime;
