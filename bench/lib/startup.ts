// Start to ready on an embedded data folder: `node server.js` with DATABASE_URL unset, timed
// from the spawn to the first 200 of GET /api/v1/health. The first start initialises the
// folder (cold); the following ones find it warm, which is what the start-to-ready target is about.
import { existsSync, readFileSync } from 'node:fs'
import { rm } from 'node:fs/promises'
import path from 'node:path'
import { performance } from 'node:perf_hooks'
import { tempDir } from '../../test/support/app.js'
import { freePort, onCleanup, spawnChild, waitForHttp } from './procs.js'

/** Where a start's time went, from the service's own log lines (ms after the spawn). */
export interface StartPhases { embeddedPostgresMs?: number, listeningMs?: number, readyMs: number }
export interface StartupResult { coldMs: number, warmMs: number[], phases: StartPhases[] }

/** The embedded postmaster's pid, from its pid file (to stop it should the service not). */
function postmasterPid (dataDir: string): number | null {
  const file = path.join(dataDir, 'pg', 'postmaster.pid')
  if (!existsSync(file)) return null
  const pid = Number(readFileSync(file, 'utf8').split('\n')[0])
  return Number.isInteger(pid) && pid > 0 ? pid : null
}

function alive (pid: number) {
  try { process.kill(pid, 0); return true } catch { return false }
}

export async function startToReady ({ serverJs, env, warmRuns, cpu }: {
  serverJs: string
  env: Record<string, string>
  warmRuns: number
  cpu: number | undefined
}): Promise<StartupResult> {
  const dataDir = await tempDir('govula-bench-ready-')
  const pgPort = await freePort()
  let stray: number | null = null
  onCleanup(async () => {
    // Normally the service stopped its Postgres on SIGTERM; if not, stop it here.
    const pid = postmasterPid(dataDir) ?? stray
    if (pid && alive(pid)) {
      process.kill(pid, 'SIGINT')
      for (let i = 0; i < 100 && alive(pid); i++) await new Promise(resolve => setTimeout(resolve, 50))
    }
    await rm(dataDir, { recursive: true, force: true })
  })

  const phases: StartPhases[] = []
  const once = async () => {
    const port = await freePort()
    const t0 = performance.now()
    const wall0 = Date.now()
    const child = spawnChild({
      name: 'service (embedded Postgres)',
      command: process.execPath,
      args: [serverJs],
      // info: the log lines that mark the phases (embedded Postgres up, listening).
      env: { ...env, LOG_LEVEL: 'info', PORT: String(port), DATA_DIR: dataDir, EMBEDDED_PG_PORT: String(pgPort) },
      cpu,
      captureStdout: true
    })
    try {
      await waitForHttp(child, `http://127.0.0.1:${port}/api/v1/health`, { timeoutMs: 120_000, everyMs: 10 })
      const ms = performance.now() - t0
      stray = postmasterPid(dataDir)
      const at = (msg: string) => {
        for (const { line } of child.stdoutLines) {
          try {
            const entry = JSON.parse(line) as { msg?: string, time?: number }
            if (entry.msg?.startsWith(msg) && entry.time) return entry.time - wall0
          } catch { /* not JSON */ }
        }
        return undefined
      }
      phases.push({ embeddedPostgresMs: at('embedded postgres running'), listeningMs: at('Server listening'), readyMs: ms })
      return ms
    } finally {
      await child.stop()
    }
  }
  const coldMs = await once()
  const warmMs: number[] = []
  for (let i = 0; i < warmRuns; i++) warmMs.push(await once())
  return { coldMs, warmMs, phases }
}
