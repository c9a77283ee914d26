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

export interface Readiness {
  /** The last computed report; answering a probe never touches the database. */
  report(): { status: ReadinessStatus, checks: CheckResult[] }
  ready(): boolean
  addCheck(check: Check): void
  refresh(): Promise<void>
  /**
   * Evidence from outside a round (a request that could not connect): the check reads failed
   * at once, and a round starts. Ready again takes a whole round that passes.
   */
  fail(name: string, err: unknown): void
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
 * Readiness: the checks an instance must pass before it takes traffic. They run
 * at boot and again on an interval, so readiness recovers by itself when a dependency does,
 * and turns unavailable when one goes away.
 */
export function createReadiness (log: Logger): Readiness {
  const checks: Check[] = []
  let results: CheckResult[] = []
  let draining = false
  let running: Promise<void> | undefined
  let timer: NodeJS.Timeout | undefined
  let lastFailed = ''

  /** Publishes a critical check's failure now, without waiting for the rest of its round. */
  function publishFailure (check: Check, failure: CheckResult) {
    if (check.critical) results = [...results.filter(r => r.name !== check.name), failure]
  }

  async function runAll () {
    const next: CheckResult[] = []
    for (const check of checks) {
      try {
        next.push({ name: check.name, ok: true, detail: await check.run() })
      } catch (err) {
        const failure = { name: check.name, ok: false, detail: describeFailure(err) }
        next.push(failure)
        // A failure is reported at once, not at the end of the round: under load each check
        // waits for a pool connection, a round can outlast a short outage, and readiness
        // would meanwhile keep answering the last round's "ready".
        publishFailure(check, failure)
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

  const envelope: Readiness = {
    report () {
      if (draining) return { status: 'draining', checks: results }
      return { status: envelope.ready() ? 'ready' : 'unavailable', checks: results }
    },
    ready () {
      return !draining && results.length > 0 && results.every(r => r.ok || !checks.find(c => c.name === r.name)?.critical)
    },
    addCheck (check) { checks.push(check) },
    fail (name, err) {
      const check = checks.find(c => c.name === name)
      if (!check || draining) return
      publishFailure(check, { name, ok: false, detail: describeFailure(err) })
      envelope.refresh().catch(() => {})
    },
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
