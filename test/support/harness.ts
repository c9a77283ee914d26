import { randomBytes } from 'node:crypto'
import { mkdtemp, chmod, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import pg from 'pg'
import { startEmbeddedPostgres, type EmbeddedServer } from '../../db/embedded.js'
import { migrate } from '../../db/migrate.js'
import { provisionDatabase } from '../../db/provision.js'
import { freePort } from '../../scripts/net.js'

/** A free TCP port on 127.0.0.1 (for servers the tests start). */
export { freePort }

/** A temporary folder the `postgres` OS user can enter (embedded Postgres runs as it under root). */
export async function tempDir (prefix: string) {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix))
  await chmod(dir, 0o755)
  return dir
}

export interface TestCluster {
  adminUrl: string
  template: string
  ownerPassword: string
  appPassword: string
  stop(): Promise<void>
}

/**
 * One Postgres for the whole run: TEST_DATABASE_URL's server when set (CI points it at the
 * machine's PostgreSQL), otherwise an embedded one in a temporary folder on a free port.
 * A migrated template database is created once; each test file copies it.
 */
export async function startTestCluster (adminUrlFromEnv?: string): Promise<TestCluster> {
  let embedded: EmbeddedServer | undefined
  let dataDir: string | undefined
  let adminUrl = adminUrlFromEnv
  if (!adminUrl) {
    dataDir = await tempDir('govula-test-pg-')
    embedded = await startEmbeddedPostgres({ dataDir, port: await freePort(), persistent: false })
    adminUrl = embedded.adminUrl
  }
  const template = `govula_tpl_${process.pid}_${randomBytes(3).toString('hex')}`
  const ownerPassword = randomBytes(12).toString('hex')
  const appPassword = randomBytes(12).toString('hex')
  const { ownerUrl } = await provisionDatabase({ adminUrl, database: template, ownerPassword, appPassword })
  await migrate(ownerUrl)
  const admin = adminUrl
  return {
    adminUrl,
    template,
    ownerPassword,
    appPassword,
    async stop () {
      const client = new pg.Client({ connectionString: admin })
      await client.connect()
      const { rows } = await client.query<{ datname: string }>(
        'SELECT datname FROM pg_database WHERE datname = $1 OR datname LIKE $2', [template, `${template}_%`])
      for (const { datname } of rows) await client.query(`DROP DATABASE IF EXISTS "${datname}" WITH (FORCE)`)
      await client.end()
      await embedded?.stop()
      if (dataDir) await rm(dataDir, { recursive: true, force: true })
    }
  }
}
