// Redis killed, or hung, under load on two replicas that share it. The
// behaviour under test is docs/rate-limits.md's "When Redis is down".
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { test, type TestContext } from 'node:test'
import { Redis } from 'ioredis'
import type { SessionEnvelope } from '../services/accounts.js'
import { buildTestApp, captureLogs, createTestDatabase, testConfig, waitFor, type LogCapture } from './support/app.js'
import { bearer, loginOperator, recordingTenant, setTenantLimit, signup } from './support/actors.js'
import { call, listen, openLoop, tally, type Outcome } from './support/faults.js'
import { startTestRedis, type TestRedis } from './support/redis.js'

const db = await createTestDatabase()

/** An outcome, and which target answered it. */
type Sent = Outcome & { target: number }

/** `call` of support/faults.ts, remembering which target answered. */
const callTarget = (base: string, target: number, kind: string, init: RequestInit & { url: string }): Promise<Sent> =>
  call(base, kind, init).then(o => ({ ...o, target }))

const ms = (outcomes: Outcome[]) => outcomes.map(o => o.doneAt - o.sentAt)
function percentile (values: number[], p: number) {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)]! : NaN
}
const latencies = (outcomes: Outcome[]) =>
  `${outcomes.length} requests, ` +
  `p50 ${percentile(ms(outcomes), 0.5)} / p99 ${percentile(ms(outcomes), 0.99)} / max ${percentile(ms(outcomes), 1)} ms`
const linesStarting = (logs: LogCapture, prefix: string) => logs.lines.filter(l => String(l.msg).startsWith(prefix))

/**
 * An open-loop load of general routes (openLoop of support/faults.ts): `rate` requests a
 * second for `durationMs`, sent to `bases` in the order `pattern` names them, each a tenant
 * GET, an entitlement check or a recording-event batch of one of `tenants`.
 */
function generalLoad ({ bases, pattern, tenants, rate, durationMs, steps }: {
  bases: string[]
  pattern: number[]
  tenants: SessionEnvelope[]
  rate: number
  durationMs: number
  steps: Array<{ atMs: number, run: () => void }>
}) {
  return openLoop({
    rate,
    durationMs,
    steps,
    send (k) {
      const target = pattern[k % pattern.length]!
      const base = bases[target]!
      const kind = Math.floor(k / pattern.length) % 3
      const auth = bearer(tenants[Math.floor(k / pattern.length / 3) % tenants.length]!)
      if (kind === 0) return callTarget(base, target, 'tenant', { url: '/api/v1/tenant', headers: auth })
      if (kind === 1) {
        return callTarget(base, target, 'entitlement', { url: '/api/v1/entitlements/check?feature=recording_mode', headers: auth })
      }
      const events = Array.from({ length: 1 + k % 3 }, () =>
        ({ id: randomUUID(), recordingId: `rec-${k % 5}`, type: 'click', occurredAt: new Date().toISOString(), payload: { k } }))
      return callTarget(base, target, 'events', {
        url: '/api/v1/recordings/events',
        method: 'POST',
        headers: { ...auth, 'content-type': 'application/json' },
        body: JSON.stringify({ events })
      })
    }
  })
}

// Every request comes from 127.0.0.1, so the per-IP limits are lifted: a 429 can then only come
// from a tenant limit or from the credential routes' fallback.
// One user spends each tenant's whole budget here, so the per-user share is set to all of it.
const base = {
  LOG_LEVEL: 'info' as const,
  DB_MAX_CONNECTIONS: 10,
  RATE_LIMIT_MAX: 1_000_000,
  AUTH_RATE_LIMIT_MAX: 1_000_000,
  TENANT_RATE_LIMIT_USER_SHARE: 100
}

/**
 * Two replicas sharing `redis` (targets 0 and 1) and a control replica without Redis (target 2),
 * all in this process: the control shares the event loop and the database with the replicas,
 * so its latency at the same moment is what the machine gives a request that never meets Redis.
 */
async function cluster (redis: TestRedis, overrides: Parameters<typeof testConfig>[1]) {
  const logs = [captureLogs(), captureLogs()]
  const config = testConfig(db, { ...base, ...overrides, REDIS_URL: redis.url })
  const replicas = [await buildTestApp(config, { logs: logs[0] }), await buildTestApp(config, { logs: logs[1] })]
  const control = await buildTestApp(testConfig(db, { ...base, ...overrides }))
  const operator = await loginOperator(control)
  const tenants: SessionEnvelope[] = []
  for (let i = 0; i < 3; i++) {
    const tenant = await recordingTenant(control, operator, { api_requests_per_minute: 1_000_000 })
    tenants.push(tenant)
  }
  const bases = [await listen(replicas[0]!), await listen(replicas[1]!), await listen(control)]
  return { replicas, logs, operator, tenants, bases, control }
}

/**
 * The longest a request may take while Redis is away: at most two decisions (per IP, per
 * tenant), each waiting at most the command timeout, on top of what the control replica took at
 * the same time. That varies with the machine's load, so half as much again is allowed, and
 * half a second.
 */
const waitBound = (control: Outcome[], commandTimeoutMs: number) =>
  Math.round(percentile(ms(control), 1) * 1.5 + 2 * commandTimeoutMs + 500)

function assertServed (outcomes: Sent[], total: number) {
  assert.equal(outcomes.length, total)
  assert.equal(outcomes.filter(o => o.error).length, 0, `no request lost its connection: ${tally(outcomes)}`)
  assert.equal(outcomes.filter(o => o.status >= 500).length, 0, `0 5xx on general routes: ${tally(outcomes)}`)
  assert.equal(outcomes.filter(o => o.status < 200 || o.status >= 300).length, 0,
    `every general request was served (fail open): ${tally(outcomes)}`)
}

const LIMITED = 20 // the probe tenant's api_requests_per_minute
const FALLBACK = 3 // AUTH_RATE_LIMIT_FALLBACK_MAX
const LOGINS = 5 // wrong-password logins sent to each replica during the outage

test(
  'Redis SIGKILLed and restarted under 120 req/s: general routes fail open, credential routes fall back strict; shared counting in 5 s',
  { timeout: 40_000 }, async (t: TestContext) => {
    const redis = await startTestRedis(t)
    if (!redis) return
    // A killed Redis closes its connections, so decisions fail at once and the command timeout
    // bounds nothing here (the next test holds it). At the default 100 ms, a test file running
    // alongside stalls the event loop long enough to time a command out now and then, which
    // fails it open and would spoil the exact counts below.
    const commandTimeoutMs = 500
    const { replicas, logs, operator, tenants, bases, control } = await cluster(redis, {
      REDIS_COMMAND_TIMEOUT_MS: commandTimeoutMs, AUTH_RATE_LIMIT_FALLBACK_MAX: FALLBACK
    })
    // It sends nothing until Redis is back, so its count starts from zero in Redis.
    const limited = await signup(control)
    await setTenantLimit(control, operator, limited.tenant!.id, LIMITED)

    const RATE = 120
    const DURATION_MS = 7000
    // Each app takes the same share, so that the control's pool is as busy as a replica's.
    const pattern = [0, 1, 2]
    const marks: { kill?: number, gone?: number, restart?: number, restarted?: number, bothUp?: number, probed?: number } = {}
    const fallbacksBefore = replicas.map(a => a.limiterHealth.fallbacks)
    let gone: Promise<void> | undefined
    let logins: Promise<Sent[]> | undefined
    let recovery: Promise<Sent[]> | undefined
    const login = (target: number) => callTarget(bases[target]!, target, 'login', {
      url: '/api/v1/auth/login',
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email: tenants[0]!.user.email, password: 'not the password' })
    })
    // 3 × the limit over both replicas at once: shared counters admit exactly the limit in all.
    const probe = () => Promise.all(Array.from({ length: LIMITED * 3 }, (_, i) =>
      callTarget(bases[i % 2]!, i % 2, 'probe', { url: '/api/v1/tenant', headers: bearer(limited) })))

    const started = Date.now()
    const outcomes = await generalLoad({
      bases,
      pattern,
      tenants,
      rate: RATE,
      durationMs: DURATION_MS,
      steps: [
        { atMs: 1500, run: () => { marks.kill = Date.now(); gone = redis.stop().then(() => { marks.gone = Date.now() }) } },
        { atMs: 2500, run: () => { logins = Promise.all(Array.from({ length: LOGINS * 2 }, (_, i) => login(i % 2))) } },
        {
          atMs: 4500,
          // Not before the logins are answered: on a busy machine they must still meet the outage.
          run: () => {
            recovery = Promise.all([gone, logins]).then(() => {
              marks.restart = Date.now()
              return redis.start()
            }).then(async () => {
              marks.restarted = Date.now()
              // redisUp turns true on the first decision Redis answers (the load makes those, and so does this poll).
              await waitFor(async () => {
                await Promise.all(bases.slice(0, 2).map(b =>
                  fetch(`${b}/api/v1/tenant`, { headers: bearer(tenants[0]!) }).then(r => r.arrayBuffer())))
                return replicas.every(a => a.limiterHealth.redisUp)
              }, { timeoutMs: 5000, what: 'both replicas to take decisions from Redis again' })
              marks.bothUp = Date.now()
              const probed = await probe()
              marks.probed = Date.now()
              return probed
            })
          }
        }
      ]
    })
    const probed = await recovery!
    const loginOutcomes = await logins!
    const { kill, gone: goneAt, restart, restarted, bothUp, probed: probedAt } = marks as Required<typeof marks>

    // Sent while Redis was gone, however long they took.
    const during = outcomes.filter(o => o.sentAt >= kill && o.sentAt < restart)
    const onReplicas = (os: Sent[]) => os.filter(o => o.target !== 2)
    const onControl = (os: Sent[]) => os.filter(o => o.target === 2)
    console.log(`# ${outcomes.length} requests in ${Date.now() - started} ms, ${RATE * 2 / 3} req/s to the replicas: ${tally(outcomes)}`)
    console.log(`# Redis killed at ${kill - started} ms (gone ${goneAt - kill} ms later), started again at ${restart - started} ms, ` +
      `answering PING ${restarted - restart} ms later`)
    console.log(`# during the outage: replicas ${latencies(onReplicas(during))}; control ${latencies(onControl(during))}`)
    console.log(`# replicas before the kill: ${latencies(onReplicas(outcomes.filter(o => o.doneAt < kill)))}; ` +
      `after Redis returned: ${latencies(onReplicas(outcomes.filter(o => o.sentAt >= restarted)))}`)
    console.log(`# both replicas on Redis ${bothUp - restarted} ms after it returned; ` +
      `the shared-counter probe done ${probedAt - restarted} ms after: ${tally(probed)}`)
    console.log(`# per replica: failOpens ${replicas.map(a => a.limiterHealth.failOpens).join(', ')}; ` +
      `fallbacks ${replicas.map((a, i) => a.limiterHealth.fallbacks - fallbacksBefore[i]!).join(', ')}; ` +
      `outages ${replicas.map(a => a.limiterHealth.outages).join(', ')}; ` +
      `logins during the outage ${[0, 1].map(i => tally(loginOutcomes.filter(o => o.target === i))).join(' | ')}`)

    // General routes fail open: nothing lost, no 5xx, everything served.
    assertServed(outcomes, RATE * DURATION_MS / 1000)
    assert.ok(onReplicas(during).length >= RATE * 2 / 3 * (restart - kill) / 1000 * 0.9, 'the load ran through the outage')

    // No request waits on Redis. While the client is disconnected a decision fails at once, so
    // the typical request is no slower than the control's (half as much again allowed, as in
    // waitBound): one that waited for a command at all would wait the whole command timeout.
    const replicaMedian = percentile(ms(onReplicas(during)), 0.5)
    const controlMedian = percentile(ms(onControl(during)), 0.5)
    const medianBound = Math.round(controlMedian * 1.5 + commandTimeoutMs / 2)
    assert.ok(replicaMedian < medianBound,
      `the median request during the outage took ${replicaMedian} ms, ${controlMedian} ms on the control (bound ${medianBound} ms)`)
    // And none waits long. One that waited for Redis to return would wait up to 3 s.
    const slowest = percentile(ms(onReplicas(during)), 1)
    const bound = waitBound(onControl(during), commandTimeoutMs)
    assert.ok(slowest <= bound, `a request during the outage took ${slowest} ms (bound ${bound} ms)`)

    for (const [i, replica] of replicas.entries()) {
      const health = replica.limiterHealth
      // Both ends of each of these fell inside the outage, so none of its decisions could reach Redis.
      const surelyDown = outcomes.filter(o => o.target === i && o.sentAt >= goneAt && o.doneAt < restart).length
      assert.ok(surelyDown > 0 && health.failOpens >= surelyDown,
        `replica ${i} failed open ${health.failOpens} times for ${surelyDown} requests sent while Redis was gone`)
      assert.equal(health.outages, 1, `replica ${i} saw one outage`)
      const down = linesStarting(logs[i]!, 'redis unavailable')
      assert.equal(down.length, 1, `replica ${i} logged the outage once, not per request`)
      assert.ok(Number(down[0]!.time) >= kill && Number(down[0]!.time) < restart, 'when Redis was killed')
      assert.equal(linesStarting(logs[i]!, 'redis is back').length, 1, `replica ${i} logged its end once`)
      assert.deepEqual(logs[i]!.lines.filter(l => Number(l.level) >= 50), [], `replica ${i} logged no errors`)
    }

    // Credential routes: the strict per-process fallback, so each replica admits FALLBACK, then 429.
    for (const i of [0, 1]) {
      const mine = loginOutcomes.filter(o => o.target === i)
      assert.equal(mine.filter(o => o.status === 401).length, FALLBACK, `replica ${i}: ${tally(mine)}`)
      const refused = mine.filter(o => o.status === 429)
      assert.equal(refused.length, LOGINS - FALLBACK, `replica ${i}: ${tally(mine)}`)
      for (const o of refused) {
        assert.match(o.contentType, /^application\/problem\+json/)
        assert.equal(o.code, 'RATE_LIMITED')
        assert.ok(Number(o.retryAfter) > 0)
      }
      // Each login took its per-IP decision locally (the per-account limits live in Postgres).
      assert.equal(replicas[i]!.limiterHealth.fallbacks - fallbacksBefore[i]!, LOGINS,
        `replica ${i}: every login was decided by the fallback`)
    }

    // Recovery: within 5 s of Redis returning, both replicas decide in Redis again, and the probe
    // sent then is counted there, shared by both.
    assert.ok(bothUp - restarted <= 5000, `both replicas on Redis ${bothUp - restarted} ms after it returned`)
    assert.equal(probed.filter(o => o.status === 200).length, LIMITED,
      `the two replicas admitted exactly the limit in all: ${tally(probed)}`)
    assert.equal(probed.filter(o => o.status === 429).length, LIMITED * 2, tally(probed))
    const client = new Redis(redis.url)
    try {
      const keys = await client.keys(`*tenant:${limited.tenant!.id}`)
      assert.equal(keys.length, 1, `one shared counter for the probe tenant (${keys.join(', ')})`)
      // Every admission, and each replica's first refusals, were counted there; once a replica has
      // refused a token it refuses it again without asking (docs/rate-limits.md), so not every 429 is.
      const counted = Number(await client.get(keys[0]!))
      assert.ok(counted >= LIMITED + 2 && counted <= LIMITED * 3, `the probe's decisions were counted in Redis (${counted})`)
    } finally {
      client.disconnect()
    }
    // The credential routes left their fallback too: its local window is spent, Redis's is not.
    for (const i of [0, 1]) assert.equal((await login(i)).status, 401, `replica ${i}: a login after recovery is decided by Redis`)
  })

test(
  'Redis hung (SIGSTOP) under 60 req/s: one probe at a time waits up to REDIS_COMMAND_TIMEOUT_MS, others fail open; back 5 s after SIGCONT',
  { timeout: 30_000 }, async (t: TestContext) => {
    const redis = await startTestRedis(t)
    if (!redis) return
    // Here the connections stay open and Redis answers nothing: only the command timeout (the
    // default, 100 ms) stands between a request and the hang.
    const { replicas, logs, tenants, bases, control } = await cluster(redis, {})
    const commandTimeoutMs = control.config.REDIS_COMMAND_TIMEOUT_MS
    const client = new Redis(redis.url)
    t.after(() => client.disconnect())
    const pid = Number(/process_id:(\d+)/.exec(await client.info('server'))![1])
    // startTestRedis's SIGKILL at the end of the file ends it even if it is still stopped.
    let continued = false
    t.after(() => { if (!continued) process.kill(pid, 'SIGCONT') })

    const marks: { stop?: number, cont?: number, bothUp?: number } = {}
    let recovered: Promise<void> | undefined
    const started = Date.now()
    const outcomes = await generalLoad({
      bases,
      pattern: [0, 1, 2],
      tenants,
      rate: 60,
      durationMs: 5000,
      steps: [
        { atMs: 1000, run: () => { marks.stop = Date.now(); process.kill(pid, 'SIGSTOP') } },
        {
          atMs: 3500,
          run: () => {
            process.kill(pid, 'SIGCONT')
            continued = true
            marks.cont = Date.now()
            recovered = waitFor(() => replicas.every(a => a.limiterHealth.redisUp),
              { timeoutMs: 5000, what: 'both replicas to take decisions from Redis again' })
              .then(() => { marks.bothUp = Date.now() })
          }
        }
      ]
    })
    await recovered
    const { stop, cont, bothUp } = marks as Required<typeof marks>
    // Sent while Redis was hung, however long they took.
    const hung = outcomes.filter(o => o.sentAt >= stop && o.sentAt < cont)
    const onReplicas = hung.filter(o => o.target !== 2)
    const onControl = hung.filter(o => o.target === 2)
    console.log(`# ${outcomes.length} requests in ${Date.now() - started} ms: ${tally(outcomes)}`)
    console.log(`# while Redis was hung: replicas ${latencies(onReplicas)}; control ${latencies(onControl)}`)
    console.log(`# both replicas on Redis ${bothUp - cont} ms after SIGCONT; ` +
      `per replica: failOpens ${replicas.map(a => a.limiterHealth.failOpens).join(', ')}, ` +
      `outages ${replicas.map(a => a.limiterHealth.outages).join(', ')}`)

    assertServed(outcomes, 60 * 5)
    assert.ok(onReplicas.length >= 60 * 2 / 3 * (cont - stop) / 1000 * 0.5, `the load met the hang (${onReplicas.length} requests)`)
    // Only the probe waits on Redis: the typical request during the hang is as fast as the
    // control's, far from the command timeout that every decision would wait without the probe.
    const median = percentile(ms(onReplicas), 0.5)
    const medianBound = Math.round(percentile(ms(onControl), 0.5) * 1.5 + commandTimeoutMs / 2)
    assert.ok(median <= medianBound, `the median request took ${median} ms while Redis was hung (bound ${medianBound} ms)`)
    // A probe waits for the command timeout, and no longer.
    const slowest = percentile(ms(onReplicas), 1)
    const bound = waitBound(onControl, commandTimeoutMs)
    assert.ok(slowest <= bound, `a request took ${slowest} ms while Redis was hung (bound ${bound} ms)`)
    for (const [i, replica] of replicas.entries()) {
      // Both ends of each of these fell inside the hang, so none of its decisions was answered.
      const surelyHung = hung.filter(o => o.target === i && o.doneAt < cont).length
      assert.ok(surelyHung > 0 && replica.limiterHealth.failOpens >= surelyHung,
        `replica ${i} failed open ${replica.limiterHealth.failOpens} times for ${surelyHung} requests during the hang`)
      const down = linesStarting(logs[i]!, 'redis unavailable')
      assert.equal(down.filter(l => Number(l.time) >= stop && Number(l.time) < cont).length, 1,
        `replica ${i} logged the hang once, not per request`)
      // A loaded machine can stall the event loop past 100 ms with Redis up; each such outage is logged once too.
      assert.equal(down.length, replica.limiterHealth.outages, `replica ${i} logged each outage once`)
    }
    assert.ok(bothUp - cont <= 5000, `both replicas on Redis ${bothUp - cont} ms after SIGCONT`)
  })
