// Shared by the benchmarks: a real Postgres (TEST_DATABASE_URL's server or an embedded one),
// a migrated database, and the config to build apps on it.
import { randomBytes } from 'node:crypto'
import os from 'node:os'
import pg from 'pg'
import { loadConfig, type Config } from '../config.js'
import { APP_ROLE, OWNER_ROLE } from '../db/provision.js'
import { startTestCluster } from '../test/support/app.js'

export async function benchDatabase () {
  const cluster = await startTestCluster(process.env.TEST_DATABASE_URL)
  const name = `${cluster.template}_bench`
  const admin = new pg.Client({ connectionString: cluster.adminUrl })
  await admin.connect()
  await admin.query(`CREATE DATABASE "${name}" OWNER ${OWNER_ROLE} TEMPLATE "${cluster.template}"`)
  await admin.end()
  const url = (user: string, password: string) => {
    const u = new URL(cluster.adminUrl)
    u.pathname = '/' + name
    u.username = user
    u.password = password
    return u.toString()
  }
  return {
    runtimeUrl: url(APP_ROLE, cluster.appPassword),
    ownerUrl: url(OWNER_ROLE, cluster.ownerPassword),
    config (overrides: Partial<Config> = {}): Config {
      return loadConfig({}, {
        NODE_ENV: 'production',
        LOG_LEVEL: 'warn',
        DATABASE_URL: url(APP_ROLE, cluster.appPassword),
        MIGRATION_DATABASE_URL: url(OWNER_ROLE, cluster.ownerPassword),
        ...overrides
      })
    },
    stop: () => cluster.stop()
  }
}

export function percentile (sorted: number[], p: number) {
  if (sorted.length === 0) return NaN
  return sorted[Math.min(sorted.length - 1, Math.floor(p / 100 * sorted.length))]!
}

export const machine = () =>
  `${os.cpus().length} × ${os.cpus()[0]?.model ?? 'cpu'}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}`

export const randomEmail = () => `bench-${randomBytes(6).toString('hex')}@example.test`
