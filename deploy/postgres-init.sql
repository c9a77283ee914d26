-- DEV ONLY. Run once by the postgres image's entrypoint (as the superuser) when
-- docker-compose.yml starts it on an empty volume. The passwords are local-development
-- placeholders that docker-compose.yml repeats; never use them anywhere else.
-- Production runs the same statements by hand: docs/operations.md, "Setting up roles on a
-- managed Postgres".

-- The group the migrations GRANT table privileges to. Nobody logs in as it.
CREATE ROLE govula_runtime NOLOGIN NOSUPERUSER NOBYPASSRLS;

-- Owns the database and every object in it; runs the migrations (MIGRATION_DATABASE_URL).
CREATE ROLE govula_owner LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE
  PASSWORD 'govula_owner_dev_only';

-- What the pool logs in as (DATABASE_URL). It owns nothing and is neither superuser nor
-- BYPASSRLS, so row-level security applies to it; it gets only what govula_runtime gets.
CREATE ROLE govula_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE
  PASSWORD 'govula_app_dev_only';
GRANT govula_runtime TO govula_app;
-- Every pooled connection logs in as govula_app, and a role sees the statement text of its own
-- other connections in pg_stat_activity: one SQL injection could read the token hashes and
-- signed contexts that other requests send. Not recording it for this role closes that
-- (only a superuser can turn it back on). docs/operations.md, check statement-privacy.
ALTER ROLE govula_app SET track_activities = off;

-- Owned by govula_owner: on PostgreSQL 15+ that also makes it the owner of schema public,
-- which the first migration needs (it revokes CREATE there from PUBLIC).
CREATE DATABASE govula OWNER govula_owner;

-- PgBouncer (transaction pooling) refuses the statement_timeout startup parameter, so behind
-- it the service runs with DB_STATEMENT_TIMEOUT=0 and the timeout lives on the role instead
-- (in this database only; the direct LISTEN connection gets it too, harmlessly).
ALTER ROLE govula_app IN DATABASE govula SET statement_timeout = '10s';
