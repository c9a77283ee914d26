-- The runtime role. The pool logs in as a member of govula_runtime (govula_app in the
-- embedded default and the tests); that login owns nothing, is neither superuser nor
-- BYPASSRLS, and gets exactly the table privileges each migration grants to this role.
-- Provisioning usually creates it first; creating it here keeps a fresh database usable
-- when the migration role has CREATEROLE.
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'govula_runtime') THEN
    CREATE ROLE govula_runtime NOLOGIN NOSUPERUSER NOBYPASSRLS;
  END IF;
END
$$;

-- Objects are created by the migration (owner) role only.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO govula_runtime;

-- Readiness compares the applied migrations with the files on disk.
GRANT SELECT ON schema_migrations TO govula_runtime;
