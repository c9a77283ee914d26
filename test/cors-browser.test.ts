// CORS as a browser enforces it: a page of a listed origin signs up, reads its tenant and
// records events through the recorder script, all cross-origin; a page of an origin not listed
// gets nothing (its requests never reach the API). Two page servers and the API on loopback,
// three origins, a real headless Chromium.
import assert from 'node:assert/strict'
import http from 'node:http'
import { after, test } from 'node:test'
import type { Browser, Page } from 'playwright-core'
import { adminClient, buildTestApp, createTestDatabase, freePort, testConfig, waitFor } from './support/app.js'
import { loginOperator, PASSWORD, setContract, uniqueEmail } from './support/actors.js'
import { chromiumMissing, launchChromium } from './support/browser.js'

const missing = chromiumMissing()
if (missing && process.env.CI) {
  test('Chromium is installed: CI must run the browser tests', () => assert.fail(`${missing}; .ci/run must install it`))
} else if (missing) {
  console.log(`# cors-browser: skipped: ${missing}`)
}

// A tenant's page: it loads the recorder from the API's origin, as a customer's site would.
function pageServer (port: number, api: string) {
  const server = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' })
    res.end(`<!doctype html><meta charset="utf-8"><title>page</title><script src="${api}/recorder.js"></script>`)
  })
  return new Promise<http.Server>(resolve => server.listen(port, '127.0.0.1', () => resolve(server)))
}

let browser: Browser
let api = ''
let allowedOrigin = ''
let otherOrigin = ''
let app: Awaited<ReturnType<typeof buildTestApp>>
const db = await createTestDatabase()

async function setup () {
  const [allowedPort, otherPort] = [await freePort(), await freePort()]
  allowedOrigin = `http://127.0.0.1:${allowedPort}`
  otherOrigin = `http://127.0.0.1:${otherPort}`
  app = await buildTestApp(testConfig(db, { CORS_ORIGINS: allowedOrigin }))
  await app.listen({ port: 0, host: '127.0.0.1' })
  const address = app.server.address()
  api = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`
  const servers = [await pageServer(allowedPort, api), await pageServer(otherPort, api)]
  after(() => Promise.all(servers.map(s => new Promise(resolve => s.close(resolve)))))
  browser = await launchChromium()
  after(() => browser.close())
}
if (!missing) await setup()

async function openPage (origin: string): Promise<Page> {
  const context = await browser.newContext()
  after(() => context.close())
  // tsx's keepNames wraps functions in __name(...), which must exist in the page too.
  await context.addInitScript('globalThis.__name = (fn) => fn')
  const page = await context.newPage()
  await page.goto(`${origin}/`)
  await page.waitForFunction(() => typeof (window as unknown as { GovulaRecorder?: object }).GovulaRecorder === 'object')
  return page
}

/** fetch from the page: the answer's status, body and the headers its script can read, or the error. */
function pageFetch (page: Page, url: string, init: { method?: string, headers?: Record<string, string>, body?: string } = {}) {
  return page.evaluate(async ({ url, init }) => {
    try {
      const res = await fetch(url, init)
      const readable: Record<string, string | null> = {}
      for (const name of ['ratelimit', 'ratelimit-policy', 'x-request-id', 'retry-after']) readable[name] = res.headers.get(name)
      return { status: res.status, body: await res.text(), readable }
    } catch (err) {
      return { error: String(err) }
    }
  }, { url, init })
}

test('a listed origin signs up, reads its tenant and records events cross-origin; limit headers are readable', { skip: missing ?? false },
  async () => {
    const page = await openPage(allowedOrigin)
    const email = uniqueEmail('cors')
    const signup = await pageFetch(page, `${api}/api/v1/auth/signup`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email, password: PASSWORD, tenantName: 'Cross Origin' })
    })
    assert.equal(signup.status, 201, JSON.stringify(signup))
    const envelope = JSON.parse(signup.body!) as { accessToken: string, tenant: { id: string } }
    assert.match(signup.readable!['x-request-id'] ?? '', /\S/, 'X-Request-Id is exposed')

    const members = await pageFetch(page, `${api}/api/v1/tenant/members`, { headers: { authorization: `Bearer ${envelope.accessToken}` } })
    assert.equal(members.status, 200, JSON.stringify(members))
    assert.deepEqual((JSON.parse(members.body!) as { members: Array<{ email: string }> }).members.map(m => m.email), [email])
    assert.match(members.readable!.ratelimit ?? '', /"tenant";r=\d+/, 'RateLimit is exposed')
    assert.match(members.readable!['ratelimit-policy'] ?? '', /"ip";q=\d+/, 'RateLimit-Policy is exposed')

    // The recorder, loaded from the API's origin by this page, posts its events there.
    await setContract(app, await loginOperator(app), envelope.tenant.id, { recording_mode: true, recording_events_per_minute: 1000 })
    const status = await page.evaluate(async (token) => {
      const recorder = (window as unknown as {
        GovulaRecorder: {
          start(o: Record<string, unknown>): string, record(t: string, p?: Record<string, unknown>): string, flush(): Promise<unknown>
        }
      }).GovulaRecorder
      recorder.start({ token, recordingId: 'cors-run', flushIntervalMs: 20, retryBaseMs: 20, retryMaxMs: 200 })
      for (let i = 0; i < 3; i++) recorder.record('click', { i })
      return recorder.flush()
    }, envelope.accessToken) as { pending: number, rejected: number }
    assert.equal(status.pending, 0, JSON.stringify(status))
    const admin = await adminClient(db)
    after(() => admin.end())
    await waitFor(async () => {
      const { rows } = await admin.query<{ n: number }>('SELECT count(*)::int AS n FROM recording_events WHERE tenant_id = $1',
        [envelope.tenant.id])
      return rows[0]!.n === 3 ? true : undefined
    }, { timeoutMs: 5000, what: 'the three events stored' })
  })

test('an origin not listed gets no answer: its reads fail in the browser and its sign-up never reaches the API', { skip: missing ?? false },
  async () => {
    const page = await openPage(otherOrigin)
    const email = uniqueEmail('refused')
    const signup = await pageFetch(page, `${api}/api/v1/auth/signup`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email, password: PASSWORD, tenantName: 'Refused' })
    })
    assert.match(signup.error ?? '', /TypeError: Failed to fetch/, JSON.stringify(signup))
    const admin = await adminClient(db)
    after(() => admin.end())
    const { rows } = await admin.query('SELECT 1 FROM users WHERE email = $1', [email])
    assert.equal(rows.length, 0, 'the preflight was refused, so the POST was never sent')
    const read = await pageFetch(page, `${api}/api/v1/tenant`, { headers: { authorization: 'Bearer x' } })
    assert.match(read.error ?? '', /TypeError: Failed to fetch/, JSON.stringify(read))

    // The same answers outside a browser: no CORS header for that origin, and its preflight is a 404.
    const preflight = await app.inject({
      method: 'OPTIONS',
      url: '/api/v1/auth/signup',
      headers: { origin: otherOrigin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' }
    })
    assert.equal(preflight.statusCode, 404)
    assert.equal(preflight.headers['access-control-allow-origin'], undefined)
    const allowed = await app.inject({
      method: 'OPTIONS',
      url: '/api/v1/auth/signup',
      headers: { origin: allowedOrigin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' }
    })
    assert.equal(allowed.statusCode, 204)
    assert.equal(allowed.headers['access-control-allow-origin'], allowedOrigin)
    assert.match(String(allowed.headers['access-control-allow-headers']), /authorization/)
  })
