import type pg from 'pg'
import { migrate, pendingMigrations, type Migration } from '../db/migrate.js'
import { isDatabaseUnavailable } from '../errors.js'
import { CheckFailure, type Check } from './readiness.js'
import type { Logger } from './logger.js'
import { loadContextKey, type ContextSigner } from './request-context.js'

interface RoleRow {
  rolsuper: boolean
  rolbypassrls: boolean
  owned_relations: number
  can_create: boolean
  owns_database: boolean
}

// The runtime role must not be able to step around row-level security: a superuser or a
// BYPASSRLS role ignores policies, a table owner (or a member of the owner role) is exempt
// unless FORCE is set and can drop the policy anyway, and CREATE on the schema lets it make
// objects of its own.
const ROLE_SQL = `
SELECT r.rolsuper, r.rolbypassrls,
       (SELECT count(*)::int FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace
          AND pg_has_role(r.oid, c.relowner, 'USAGE')) AS owned_relations,
       has_schema_privilege(r.oid, 'public', 'CREATE') AS can_create,
       (SELECT d.datdba = r.oid FROM pg_database d WHERE d.datname = current_database()) AS owns_database
FROM pg_roles r WHERE r.rolname = current_user`

export interface RlsViolation { table: string, problem: string }

/**
 * Every table with a tenant_id column must have row-level security enabled and forced and
 * at least one policy. Used by readiness (an unprotected tenant table keeps the instance out
 * of rotation) and by the catalog test.
 */
export async function rlsViolations (client: Pick<pg.ClientBase, 'query'>): Promise<RlsViolation[]> {
  const { rows } = await client.query<{ table: string, enabled: boolean, forced: boolean, policies: number }>(`
    SELECT c.relname AS table, c.relrowsecurity AS enabled, c.relforcerowsecurity AS forced,
           -- Policies for everyone (no TO clause): the owner's own (owner_lookup and the like) do not count.
           (SELECT count(*)::int FROM pg_policy p WHERE p.polrelid = c.oid AND p.polroles = '{0}') AS policies
      FROM pg_class c
      JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
     WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
     ORDER BY c.relname`)
  return rows.flatMap(r => [
    !r.enabled && { table: r.table, problem: 'row level security is not enabled' },
    !r.forced && { table: r.table, problem: 'row level security is not forced' },
    r.policies === 0 && { table: r.table, problem: 'has no policy' }
  ].filter((v): v is RlsViolation => Boolean(v)))
}

export interface DatabaseCheckOptions {
  pool: pg.Pool
  /** DB_MAX_CONNECTIONS, for the sizing rule. */
  poolMax?: number
  migrations: Migration[]
  /** Owner-role URL; when set, pending migrations are applied by the check itself. */
  migrateWith?: string
  /** The request-context signer, and the owner-role URL its key is read through. */
  context: { signer: ContextSigner, ownerUrl: string }
  log: Logger
}

/** The readiness's database checks: reachable, migrations current, runtime role safe, context key read. */
export function databaseChecks ({ pool, poolMax, migrations, migrateWith, context, log }: DatabaseCheckOptions): Check[] {
  return [
    {
      name: 'database',
      critical: true,
      async run () {
        await pool.query('SELECT 1')
        return 'reachable'
      }
    },
    {
      name: 'migrations',
      critical: true,
      async run () {
        let pending = await pendingMigrations(pool, migrations)
        if (pending.length > 0 && migrateWith) {
          await migrate(migrateWith, log)
          pending = await pendingMigrations(pool, migrations)
        }
        if (pending.length > 0) throw new CheckFailure(`${pending.length} pending: ${pending.map(m => m.file).join(', ')}`)
        return `${migrations.length} applied`
      }
    },
    {
      // Tenant work needs the key that signs the row-level security context; it lives where
      // only the owner role reads it, so it comes through MIGRATION_DATABASE_URL, once.
      name: 'request-context',
      critical: true,
      async run () {
        if (!context.signer.loaded) {
          try {
            await loadContextKey(context.signer, context.ownerUrl)
          } catch (err) {
            if (isDatabaseUnavailable(err)) throw err
            throw new CheckFailure(
              'the request-context key cannot be read: MIGRATION_DATABASE_URL must name the owner role (docs/operations.md)')
          }
        }
        return 'the context key is loaded'
      }
    },
    {
      name: 'runtime-role',
      critical: true,
      async run () {
        const { rows: [role] } = await pool.query<RoleRow>(ROLE_SQL)
        if (!role) throw new CheckFailure('current role not found')
        const problems = [
          role.rolsuper && 'is superuser',
          role.rolbypassrls && 'has BYPASSRLS',
          role.owned_relations > 0 && `owns ${role.owned_relations} relations`,
          role.can_create && 'may create objects in schema public',
          role.owns_database && 'owns the database'
        ].filter(Boolean)
        // The answer is public (probes need no credentials): it names no role. The operator
        // knows which login DATABASE_URL holds.
        if (problems.length) {
          throw new CheckFailure(`the runtime role ${problems.join(', ')}; use a least-privileged login (docs/operations.md)`)
        }
        return 'the runtime role is least-privileged'
      }
    },
    {
      // The sizing rule: DB_MAX_CONNECTIONS × replicas ≤ 0.8 × max_connections. Replicas are
      // counted by their connection names (visible to the same role); behind PgBouncer the
      // server's max_connections is not the limit, so treat the warning as a hint there.
      name: 'pool-sizing',
      critical: false,
      async run () {
        const { rows: [r] } = await pool.query<{ max: number, replicas: number }>(`
          SELECT current_setting('max_connections')::int AS max,
                 greatest(1, (SELECT count(DISTINCT application_name)::int FROM pg_stat_activity
                               WHERE usename = current_user AND application_name LIKE 'govula-core:%')) AS replicas`)
        const need = (poolMax ?? 0) * r!.replicas
        const replicas = `${r!.replicas} ${r!.replicas === 1 ? 'replica' : 'replicas'}`
        if (need > 0.8 * r!.max) {
          throw new CheckFailure(`DB_MAX_CONNECTIONS ${poolMax} × ${replicas} = ${need} > 0.8 × max_connections ${r!.max}; ` +
            'lower DB_MAX_CONNECTIONS or use PgBouncer (docs/scaling.md)')
        }
        return `${need} of ${r!.max} connections at most (${replicas})`
      }
    },
    {
      // Every pooled connection is the same role, and a role reads the statement text of its
      // other connections in pg_stat_activity: with it recorded, one SQL injection could read
      // the token hashes and signed contexts that other requests send (and replay them until
      // the access token, or the context's five minutes, run out).
      name: 'statement-privacy',
      critical: false,
      async run () {
        const { rows: [r] } = await pool.query<{ on: boolean }>("SELECT current_setting('track_activities')::boolean AS on")
        if (r!.on) {
          throw new CheckFailure('the runtime role\'s statements are visible to its other connections; ' +
            'as a superuser: ALTER ROLE <runtime login> SET track_activities = off (docs/operations.md)')
        }
        return "the runtime role's statements are not recorded"
      }
    },
    {
      name: 'row-level-security',
      critical: true,
      async run () {
        const violations = await rlsViolations(pool)
        if (violations.length) throw new CheckFailure(violations.map(v => `${v.table} ${v.problem}`).join('; '))
        return 'every tenant table is protected'
      }
    }
  ]
}
