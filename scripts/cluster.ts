// `npm run cluster`: the production topology on this machine, in the foreground (docs/cluster.md).
// Postgres → PgBouncer (transaction pooling) → 3 replicas (+ Redis, broadcast on) → nginx.
// Ctrl-C (or SIGTERM) stops everything in order; a second one kills what is left at once.
import { parseArgs } from 'node:util'
import { DEFAULT_DIR, startCluster, type Cluster } from './cluster-lib.js'

const usage = `usage: npm run cluster -- [--replicas N] [--port PORT] [--dist] [--dir DIR]

  --replicas N   replicas behind the balancer (default 3, or CLUSTER_REPLICAS)
  --port PORT    the balancer's port on 127.0.0.1 (default 8080, or CLUSTER_PORT; 0 = any free port)
  --dist         run dist/server.js (after \`npm run build\`) instead of server.ts through tsx
  --dir DIR      configs, logs and credentials (default .data/cluster, or CLUSTER_DIR)

Postgres: CLUSTER_ADMIN_URL (a superuser URL), else TEST_DATABASE_URL, else
postgres://postgres@127.0.0.1:5432/postgres; an embedded one when none of them is set and that
one does not answer. Service settings (LOG_LEVEL, OPERATOR_BOOTSTRAP_EMAIL, …) in the
environment reach every replica, except the ones the cluster sets itself.`

let args
try {
  args = parseArgs({
    options: {
      replicas: { type: 'string' },
      port: { type: 'string' },
      dist: { type: 'boolean', default: false },
      dir: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false }
    }
  }).values
} catch (err) {
  console.error(`${(err as Error).message}\n\n${usage}`)
  process.exit(2)
}
if (args.help) {
  console.log(usage)
  process.exit(0)
}

const int = (name: string, raw: string | undefined, fallback: number, min: number) => {
  if (raw === undefined || raw === '') return fallback
  if (!/^\d+$/.test(raw) || Number(raw) < min) {
    console.error(`${name} must be an integer ≥ ${min}, got ${JSON.stringify(raw)}`)
    process.exit(2)
  }
  return Number(raw)
}

const log = (line: string) => console.log(`[cluster] ${line}`)
const started = Date.now()
let cluster: Cluster | undefined
let stopping = 0

async function shutdown (signal: string) {
  if (stopping) {
    // npm forwards the terminal's Ctrl-C to the script, which has it already: only a signal
    // that comes a second later means "hurry".
    if (Date.now() - stopping < 1000) return
    log(`${signal} again: killing what is left`)
    process.exit(1) // the exit hook in cluster-lib SIGKILLs every child group still alive
  }
  stopping = Date.now()
  log(`${signal}: stopping (balancer, replicas, pgbouncer, redis${cluster?.postgres.embedded ? ', embedded postgres' : ''})`)
  try {
    await cluster?.stop()
    log('stopped')
    process.exit(0)
  } catch (err) {
    console.error(`[cluster] ${(err as Error).message}`)
    process.exit(1)
  }
}
process.on('SIGINT', () => { shutdown('SIGINT').catch(() => process.exit(1)) })
process.on('SIGTERM', () => { shutdown('SIGTERM').catch(() => process.exit(1)) })

try {
  const dir = args.dir ?? process.env.CLUSTER_DIR ?? DEFAULT_DIR
  log(`starting (state and logs in ${dir})`)
  cluster = await startCluster({
    replicas: int('--replicas', args.replicas ?? process.env.CLUSTER_REPLICAS, 3, 1),
    lbPort: int('--port', args.port ?? process.env.CLUSTER_PORT, 8080, 0),
    entry: args.dist ? 'dist' : 'source',
    dir,
    log,
    onUnexpectedExit: (replica, reason) => log(`replica ${replica.index} stopped unexpectedly: ${reason}`)
  })
} catch (err) {
  console.error(`[cluster] failed to start: ${(err as Error).message}`)
  process.exit(1)
}
if (stopping) await new Promise(() => {}) // a signal arrived during the start: shutdown() exits

const c = cluster
log(`ready in ${((Date.now() - started) / 1000).toFixed(1)} s
  balancer     ${c.url}    (nginx, round robin; access log ${c.nginx.accessLog})
${c.replicas.map(r => `  replica ${r.index}    ${r.url}    (pid ${r.pid}, log ${r.logFile})`).join('\n')}
  pgbouncer    127.0.0.1:${c.pgbouncer.port}    (transaction pooling; console: psql '${c.pgbouncer.statsUrl}' -c 'SHOW POOLS')
  redis        ${c.redis.url}
  postgres     ${new URL(c.postgres.adminUrl).host}${c.postgres.embedded ? ' (embedded)' : ''}, database ${c.database}

Try: curl ${c.url}/api/v1/health     Stop: Ctrl-C`)
console.log(c.url)
