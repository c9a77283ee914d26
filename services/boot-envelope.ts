import { isDatabaseUnavailable } from '../errors.js'
import type { Logger } from './logger.js'

export interface CheckResult { name: string, ok: boolean, detail: string }
export type ReadinessStatus = 'ready' | 'unavailable' | 'draining'

export interface Check {
  name: string
  /** A failing informational check shows in the report but does not make the instance unready. */
  critical: boolean
  run(): Promise<string>
}

export interface BootEnvelope {
  /** The last computed report; answering a probe never touches the database. */
  report(): { status: ReadinessStatus, checks: CheckResult[] }
  ready(): boolean
  addCheck(check: Check): void
  refresh(): Promise<void>
  start(intervalMs: number): void
  stop(): void
  drain(): void
}

/** Detail for a failed check without hosts, credentials or SQL: a probe answer is public. */
export function describeFailure (err: unknown): string {
  if (!(err instanceof Error)) return 'failed'
  if (err.name === 'MigrationError' || err.name === 'CheckFailure') return err.message
  const code = (err as { code?: unknown }).code
  const label = isDatabaseUnavailable(err) ? 'unreachable' : 'failed'
  return typeof code === 'string' ? `${label} (${code})` : `${label} (${err.message.replace(/\S+@\S+/g, '…').slice(0, 120)})`
}

export class CheckFailure extends Error {
  override name = 'CheckFailure'
}

/**
 * The boot envelope: the checks an instance must pass before it takes traffic. They run
 * at boot and again on an interval, so readiness recovers by itself when a dependency does,
 * and turns unavailable when one goes away.
 */
export function createBootEnvelope (log: Logger): BootEnvelope {
  const checks: Check[] = []
  let results: CheckResult[] = []
  let draining = false
  let running: Promise<void> | undefined
  let timer: NodeJS.Timeout | undefined
  let lastFailed = ''

  async function runAll () {
    const next: CheckResult[] = []
    for (const check of checks) {
      try {
        next.push({ name: check.name, ok: true, detail: await check.run() })
      } catch (err) {
        next.push({ name: check.name, ok: false, detail: describeFailure(err) })
      }
    }
    results = next
    const failed = next.filter(r => !r.ok).map(r => `${r.name}: ${r.detail}`).join('; ')
    if (failed !== lastFailed) {
      // Log transitions only, not every interval.
      if (failed) log.warn({ checks: next }, `readiness checks failing: ${failed}`)
      else log.info({ checks: next }, 'readiness checks pass')
      lastFailed = failed
    }
  }

  const envelope: BootEnvelope = {
    report () {
      if (draining) return { status: 'draining', checks: results }
      return { status: envelope.ready() ? 'ready' : 'unavailable', checks: results }
    },
    ready () {
      return !draining && results.length > 0 && results.every(r => r.ok || !checks.find(c => c.name === r.name)?.critical)
    },
    addCheck (check) { checks.push(check) },
    refresh () {
      running ??= runAll().finally(() => { running = undefined })
      return running
    },
    start (intervalMs) {
      const tick = () => {
        timer = setTimeout(() => { envelope.refresh().finally(() => { if (timer) tick() }) }, intervalMs)
        timer.unref()
      }
      tick()
    },
    stop () {
      clearTimeout(timer)
      timer = undefined
    },
    drain () { draining = true }
  }
  return envelope
}
