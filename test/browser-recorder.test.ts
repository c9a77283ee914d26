// The browser recorder in a real headless Chromium, against the real server on a real port:
// outages, reloads and lost responses, and every event stored exactly once.
import assert from 'node:assert/strict'
import { after, test } from 'node:test'
import type pg from 'pg'
import type { Browser, Page } from 'playwright-core'
import { problem } from '../errors.js'
import type { SessionEnvelope } from '../services/accounts.js'
import { adminClient, buildTestApp, createTestDatabase, testConfig, waitFor } from './support/app.js'
import { loginOperator, recordingTenant, signup } from './support/actors.js'
import { chromiumMissing, launchChromium } from './support/browser.js'

// Without Chromium the tests skip and say why, except in CI, where they must run.
const missing = chromiumMissing()
const skip = missing ?? false
if (missing && process.env.CI) {
  test('Chromium is installed: CI must run the browser tests', () => assert.fail(`${missing}; .ci/run must install it`))
} else if (missing) {
  console.log(`# browser-recorder: skipped: ${missing}`)
}

const INGEST = '/api/v1/recordings/events'
const PREFIX = 'govula-recorder:e:'

/** What the test makes of the ingest route: up, down (503), or storing and then losing the answer. */
const server = {
  mode: 'up' as 'up' | 'unavailable' | 'lose-answer',
  unavailable: 0,
  lostAnswers: 0,
  accepted: 0,
  duplicates: 0,
  statuses: [] as number[]
}

let app: Awaited<ReturnType<typeof buildTestApp>>
let origin = ''
let browser: Browser
let operator: SessionEnvelope
let admin: pg.Client

declare global {
  interface Window {
    GovulaRecorder: {
      start(options: Record<string, unknown>): string
      record(type: string, payload?: Record<string, unknown>): string
      flush(): Promise<Status>
      stop(): Promise<Status>
      status(): Status
      pending(): number
      droppedCount(): number
    }
    recorderErrors: Array<{ kind: string, status?: number, code?: string, retrying: boolean, eventRejected?: boolean }>
  }
}
interface Status {
  started: boolean
  blocked: boolean
  pending: number
  dropped: number
  rejected: number
  attempt: number
  retryScheduled: boolean
}

if (!skip) {
  const db = await createTestDatabase()
  app = await buildTestApp(testConfig(db), {
    setup (a) {
      // A tenant's page, which loads the script (the API's own CSP, under which nothing runs, is
      // for its JSON answers, not for a page like this one).
      a.get('/test/recorder-page', { config: { auth: false } }, async (_request, reply) =>
        reply.header('content-security-policy', "script-src 'self'").type('text/html; charset=utf-8')
          .send('<!doctype html><meta charset="utf-8"><title>recorder</title><script src="/recorder.js"></script>'))
      // Outage: the ingest answers 503 before anything is read or stored.
      a.addHook('onRequest', async (request, reply) => {
        if (request.url !== INGEST || server.mode !== 'unavailable') return
        server.unavailable++
        return reply.code(503).header('retry-after', '0').type('application/problem+json')
          .send(problem('SERVICE_UNAVAILABLE', 'test outage', request.id))
      })
      // A poison event: the batch holding it is refused as invalid (the recorder must isolate it).
      a.addHook('preHandler', async (request, reply) => {
        const events = (request.body as { events?: Array<{ type: string }> } | undefined)?.events
        if (request.url === INGEST && events?.some(e => e.type === 'poison')) {
          return reply.code(400).type('application/problem+json').send(problem('VALIDATION_FAILED', 'poison', request.id))
        }
      })
      a.addHook('onSend', async (request, reply, payload) => {
        if (request.url !== INGEST) return payload
        server.statuses.push(reply.statusCode)
        if (reply.statusCode === 202) {
          const result = JSON.parse(String(payload)) as { accepted: number, duplicates: number }
          server.accepted += result.accepted
          server.duplicates += result.duplicates
          if (server.mode === 'lose-answer') {
            // Stored and committed, but the connection dies before the answer leaves.
            server.lostAnswers++
            server.mode = 'up'
            request.raw.socket.destroy()
          }
        }
        return payload
      })
    }
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const address = app.server.address()
  origin = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`
  operator = await loginOperator(app)
  admin = await adminClient(db)
  browser = await launchChromium()
  after(() => browser.close())
}

async function storedIds (tenant: SessionEnvelope) {
  const { rows } = await admin.query<{ id: string }>('SELECT id FROM recording_events WHERE tenant_id = $1', [tenant.tenant!.id])
  return rows.map(r => r.id)
}

async function openPage () {
  const context = await browser.newContext()
  after(() => context.close())
  // tsx compiles this file with esbuild's keepNames, which wraps functions in __name(...):
  // the functions handed to page.evaluate run in the page, where that helper must exist too.
  await context.addInitScript('globalThis.__name = (fn) => fn')
  const page = await context.newPage()
  await page.goto(`${origin}/test/recorder-page`)
  await page.waitForFunction(() => typeof window.GovulaRecorder === 'object')
  return page
}

/** Fast retries so the test runs in seconds; the real defaults are seconds to a minute. */
const start = (page: Page, token: string, options: Record<string, unknown> = {}) => page.evaluate(({ token, options }) => {
  window.recorderErrors = []
  return window.GovulaRecorder.start({
    token,
    recordingId: 'browser-run',
    flushIntervalMs: 20,
    retryBaseMs: 20,
    retryMaxMs: 200,
    onError: (e: Window['recorderErrors'][number]) => window.recorderErrors.push(e),
    ...options
  })
}, { token, options })

const record = (page: Page, n: number, label: string, type = 'step') =>
  page.evaluate(({ n, label, type }) => Array.from({ length: n }, (_, i) => window.GovulaRecorder.record(type, { label, i })),
    { n, label, type })

const storageKeys = (page: Page) => page.evaluate((prefix) => Object.keys(localStorage).filter(k => k.startsWith(prefix)).sort(), PREFIX)
const status = (page: Page) => page.evaluate(() => window.GovulaRecorder.status())
const errors = (page: Page) => page.evaluate(() => window.recorderErrors)

test('outage, reload and a lost answer: every recorded event arrives exactly once', { skip, timeout: 60_000 }, async () => {
  const tenant = await recordingTenant(app, operator)
  const page = await openPage()
  const recorded: string[] = []
  await start(page, tenant.accessToken)

  // Up: delivered and acknowledged.
  recorded.push(...await record(page, 30, 'up'))
  await waitFor(async () => (await storedIds(tenant)).length === 30 && (await storageKeys(page)).length === 0,
    { what: 'the first 30 events delivered' })

  // Down: the events wait in localStorage while the recorder backs off and retries.
  server.mode = 'unavailable'
  const failedBefore = server.unavailable
  recorded.push(...await record(page, 40, 'down'))
  await waitFor(() => server.unavailable >= failedBefore + 3, { what: 'retries during the outage' })
  assert.equal((await storageKeys(page)).length, 40)
  assert.ok((await errors(page)).some(e => e.status === 503 && e.retrying), 'reported as retrying')

  // A reload in the middle of the outage: nothing is lost.
  await page.reload()
  await page.waitForFunction(() => typeof window.GovulaRecorder === 'object')
  assert.equal((await storageKeys(page)).length, 40, 'still in localStorage after the reload, before start()')
  await start(page, tenant.accessToken) // resumes: the pending events are sent (and refused) again
  const afterReload = server.unavailable
  await waitFor(() => server.unavailable > afterReload, { what: 'the resumed recorder retrying' })
  recorded.push(...await record(page, 20, 'after-reload'))
  assert.equal((await storageKeys(page)).length, 60)

  // Back, but the first answer is lost after the batch was stored: the retry is a duplicate.
  server.mode = 'lose-answer'
  await waitFor(async () => (await storageKeys(page)).length === 0, { timeoutMs: 15_000, what: 'the backlog delivered' })

  const ids = await storedIds(tenant)
  assert.equal(server.lostAnswers, 1)
  assert.equal(ids.length, 90)
  assert.equal(new Set(ids).size, 90)
  assert.deepEqual(new Set(ids), new Set(recorded), 'exactly the recorded events')
  assert.equal(server.accepted - 30, 60, 'each stored once, counting the batch whose answer was lost')
  assert.ok(server.duplicates >= 1, 'the batch whose answer was lost came again and was not stored twice')
  assert.deepEqual(await status(page),
    { started: true, blocked: false, pending: 0, dropped: 0, rejected: 0, attempt: 0, retryScheduled: false })
})

test('401 and 403 stop the retries and are reported; flush() or start() with a new token resumes', { skip, timeout: 30_000 }, async () => {
  const tenant = await recordingTenant(app, operator)
  const page = await openPage()
  const before = server.statuses.length
  await start(page, 'not-a-valid-token')
  const ids = await record(page, 3, 'unauthorised')
  await waitFor(async () => (await errors(page)).length > 0, { what: 'the 401 reported' })
  assert.deepEqual((await errors(page)).map(e => [e.status, e.code, e.retrying]), [[401, 'AUTH_INVALID_TOKEN', false]])
  assert.deepEqual(await status(page),
    { started: true, blocked: true, pending: 3, dropped: 0, rejected: 0, attempt: 0, retryScheduled: false })
  ids.push(...await record(page, 2, 'still-blocked'))
  assert.equal((await status(page)).retryScheduled, false, 'no timer while blocked')
  assert.deepEqual(server.statuses.slice(before), [401], 'exactly one attempt')

  // A tenant without recording_mode: 403 ENTITLEMENT_DENIED, reported the same way.
  const free = await signup(app)
  await start(page, free.accessToken)
  await waitFor(async () => (await errors(page)).some(e => e.status === 403), { what: 'the 403 reported' })
  assert.equal((await errors(page))[0]!.code, 'ENTITLEMENT_DENIED')
  assert.equal((await status(page)).blocked, true)

  await start(page, tenant.accessToken)
  // The rows commit before the 202 reaches the page: wait for the page's side.
  await waitFor(async () => (await storageKeys(page)).length === 0, { what: 'delivery with a valid token' })
  assert.deepEqual(new Set(await storedIds(tenant)), new Set(ids))
})

test(
  'bounded storage: the oldest are dropped and counted (max events, then a full quota); a poison event is isolated',
  { skip, timeout: 30_000 }, async () => {
    const tenant = await recordingTenant(app, operator)
    const page = await openPage()
    server.mode = 'unavailable'
    try {
      await start(page, tenant.accessToken, { maxEvents: 5 })
      const ids = await record(page, 8, 'bounded')
      assert.equal(await page.evaluate(() => window.GovulaRecorder.droppedCount()), 3)
      const keys = await storageKeys(page)
      assert.deepEqual(keys.map(k => k.split(':').pop()), ids.slice(3), 'the newest five kept, in order')

      // The page's own data fills the quota: the recorder makes room by dropping its oldest.
      await start(page, tenant.accessToken, { maxEvents: 100 }) // no longer the bound that bites
      const filled = await page.evaluate(() => {
        let n = 0
        for (const size of [1 << 20, 1 << 16, 1 << 10, 64]) {
          for (;;) {
            try {
              localStorage.setItem(`junk-${n++}`, 'x'.repeat(size))
            } catch {
              break
            }
          }
        }
        return n
      })
      assert.ok(filled > 0)
      const squeezed = await record(page, 1, 'squeezed')
      const dropped = await page.evaluate(() => window.GovulaRecorder.droppedCount())
      assert.ok(dropped >= 4, `dropped ${dropped}: at least one more for the quota`)
      const after = (await storageKeys(page)).map(k => k.split(':').pop())
      assert.equal(after[after.length - 1], squeezed[0], 'the new event was stored')
      assert.deepEqual(after.slice(0, -1), ids.slice(dropped), 'what was dropped is the oldest')
      await page.evaluate(() => { for (const k of Object.keys(localStorage)) if (k.startsWith('junk-')) localStorage.removeItem(k) })

      const tooBig = await page.evaluate(() => {
        try {
          window.GovulaRecorder.record('big', { s: 'x'.repeat(20_000) })
          return null
        } catch (err) {
          return (err as Error).name
        }
      })
      assert.equal(tooBig, 'RangeError', 'a payload over 16 KiB is refused at record time')

      // One poison event among good ones: halving isolates it; it alone is given up and reported.
      const good = after
      const poison = await record(page, 1, 'poison', 'poison')
      const more = await record(page, 6, 'after-poison')
      server.mode = 'up'
      await page.evaluate(() => window.GovulaRecorder.flush())
      await waitFor(async () => (await storageKeys(page)).length === 0, { what: 'the queue drained' })
      const stored = new Set(await storedIds(tenant))
      for (const id of [...good, ...more]) assert.ok(stored.has(id!), `${id} stored`)
      assert.equal(stored.has(poison[0]!), false)
      assert.equal(stored.size, good.length + more.length)
      const rejected = (await errors(page)).filter(e => e.eventRejected)
      assert.deepEqual(rejected.map(e => [e.status, e.retrying]), [[400, false]])
      assert.equal((await status(page)).rejected, 1)
    } finally {
      server.mode = 'up'
    }
  })
