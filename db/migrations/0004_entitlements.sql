-- Entitlements: features, plans that grant them, per-tenant contracts that override them for
-- a period, and the lifecycle dates that change what a tenant may do without any write.

CREATE TABLE features (
  key text PRIMARY KEY,
  kind text NOT NULL CHECK (kind IN ('boolean', 'numeric')),
  description text NOT NULL
);

CREATE TABLE plans (
  key text PRIMARY KEY,
  name text NOT NULL
);

-- A boolean feature is granted when `enabled`; a numeric one carries `limit_value`
-- (NULL: unlimited). A feature missing from a plan is not granted.
CREATE TABLE plan_features (
  plan text NOT NULL REFERENCES plans (key),
  feature text NOT NULL REFERENCES features (key),
  enabled boolean NOT NULL DEFAULT true,
  limit_value bigint CHECK (limit_value >= 0),
  PRIMARY KEY (plan, feature)
);

INSERT INTO features (key, kind, description) VALUES
  ('recording_mode', 'boolean', 'record browser sessions (POST /api/v1/recordings/events)'),
  ('audit_export', 'boolean', 'read and export the audit log'),
  ('seats', 'numeric', 'members a tenant may have'),
  ('api_requests_per_minute', 'numeric', 'per-tenant API rate limit'),
  ('recording_events_per_minute', 'numeric', 'recording events ingested per minute'),
  ('recording_retention_days', 'numeric', 'days recording events are kept');

INSERT INTO plans (key, name) VALUES ('free', 'Free'), ('pro', 'Pro'), ('enterprise', 'Enterprise');

INSERT INTO plan_features (plan, feature, enabled, limit_value) VALUES
  ('free', 'recording_mode', false, NULL),
  ('free', 'audit_export', false, NULL),
  ('free', 'seats', true, 3),
  ('free', 'api_requests_per_minute', true, 600),
  ('free', 'recording_events_per_minute', true, 0),
  ('free', 'recording_retention_days', true, 7),
  ('pro', 'recording_mode', true, NULL),
  ('pro', 'audit_export', true, NULL),
  ('pro', 'seats', true, 25),
  ('pro', 'api_requests_per_minute', true, 6000),
  ('pro', 'recording_events_per_minute', true, 60000),
  ('pro', 'recording_retention_days', true, 30),
  ('enterprise', 'recording_mode', true, NULL),
  ('enterprise', 'audit_export', true, NULL),
  ('enterprise', 'seats', true, NULL),
  ('enterprise', 'api_requests_per_minute', true, 60000),
  ('enterprise', 'recording_events_per_minute', true, 600000),
  ('enterprise', 'recording_retention_days', true, 365);

ALTER TABLE tenants
  ADD CONSTRAINT tenants_plan_fkey FOREIGN KEY (plan) REFERENCES plans (key),
  -- A new tenant's trial lasts 14 days; then it is past due until someone pays.
  ADD COLUMN trial_ends_at timestamptz DEFAULT (now() + interval '14 days'),
  -- Set when a tenant becomes past due: after it, the tenant is treated as suspended.
  ADD COLUMN grace_ends_at timestamptz,
  ADD COLUMN lifecycle_changed_at timestamptz NOT NULL DEFAULT now();

-- A contract overrides plan features for its period: {"seats": 500, "recording_mode": true}.
CREATE TABLE tenant_contracts (
  tenant_id uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
  features jsonb NOT NULL CHECK (jsonb_typeof(features) = 'object'),
  starts_at timestamptz NOT NULL,
  ends_at timestamptz NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  CHECK (ends_at > starts_at)
);
ALTER TABLE tenant_contracts ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_contracts FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant_contracts
  USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid OR app_is_operator())
  WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid OR app_is_operator());

GRANT SELECT ON features, plans, plan_features TO govula_runtime;
GRANT SELECT, INSERT, UPDATE, DELETE ON tenant_contracts TO govula_runtime;
