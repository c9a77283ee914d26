import assert from 'node:assert/strict'
import { test } from 'node:test'
import { Validator } from '@seriousme/openapi-schema-validator'
import { buildTestApp, captureLogs, createTestDatabase, freePort, testConfig, waitFor } from './support/app.js'
import { bearer, signup } from './support/actors.js'

const db = await createTestDatabase()

// The REST contract: each of these must be in the document (more may be).
const CONTRACT = [
  'GET /health', 'GET /api/v1/health',
  'POST /api/v1/auth/signup', 'POST /api/v1/auth/login', 'POST /api/v1/auth/refresh', 'POST /api/v1/auth/logout',
  'GET /api/v1/auth/sessions', 'DELETE /api/v1/auth/sessions/{id}', 'POST /api/v1/auth/password',
  'GET /api/v1/tenant', 'GET /api/v1/tenant/members', 'POST /api/v1/tenant/members',
  'PATCH /api/v1/tenant/members/{userId}', 'DELETE /api/v1/tenant/members/{userId}',
  'GET /api/v1/entitlements', 'GET /api/v1/entitlements/check', 'POST /api/v1/entitlements/check',
  'GET /api/v1/operator/tenants', 'PUT /api/v1/operator/tenants/{id}/plan', 'PUT /api/v1/operator/tenants/{id}/contract',
  'DELETE /api/v1/operator/tenants/{id}/contract', 'POST /api/v1/operator/tenants/{id}/lifecycle', 'GET /api/v1/operator/jobs',
  'POST /api/internal/cron/{job}',
  'GET /api/v1/operator/audit/verify', 'GET /api/v1/operator/audit/events',
  'GET /api/v1/audit', 'GET /api/v1/audit/verify', 'GET /api/v1/audit/checkpoint',
  'POST /api/v1/recordings/events', 'GET /api/v1/recordings', 'GET /api/v1/recordings/{recordingId}/events', 'GET /recorder.js'
]

test('OpenAPI: a valid 3.x document at /docs/json, UI at /docs, every operation with request and response schemas', async () => {
  const app = await buildTestApp(testConfig(db, { ENABLE_INTERNAL_CRON: true, CRON_SECRET: 'x' }))
  const res = await app.inject('/docs/json')
  assert.equal(res.statusCode, 200)
  const doc = res.json()
  const result = await new Validator().validate(doc)
  assert.equal(result.valid, true, JSON.stringify(result.errors)?.slice(0, 2000))
  assert.match(doc.openapi, /^3\./)
  assert.ok((await app.inject('/docs')).statusCode < 400)

  const operations = Object.entries(doc.paths as Record<string, Record<string, any>>)
    .flatMap(([path, ops]) => Object.entries(ops).map(([method, op]) => ({ key: `${method.toUpperCase()} ${path}`, path, method, op })))
  for (const key of CONTRACT) assert.ok(operations.some(o => o.key === key), `${key} is documented`)
  for (const { key, path, method, op } of operations) {
    if (path.startsWith('/docs')) continue
    const ok = Object.entries(op.responses ?? {}).filter(([code]) => /^2/.test(code))
    assert.ok(ok.length > 0, `${key} documents a 2xx response`)
    for (const [code, response] of ok) {
      if (code !== '204') {
        assert.ok(Object.values((response as any).content ?? {}).some((c: any) => c.schema), `${key} ${code} has a response schema`)
      }
    }
    for (const name of path.match(/\{(\w+)\}/g) ?? []) {
      assert.ok(op.parameters?.some((p: any) => p.in === 'path' && `{${p.name}}` === name), `${key} describes ${name}`)
    }
    const takesBody = ['post', 'put', 'patch'].includes(method) && !['/api/v1/auth/logout', '/api/internal/cron/{job}'].includes(path)
    if (takesBody) assert.ok(op.requestBody?.content?.['application/json']?.schema, `${key} has a request body schema`)
  }
})

test('metrics: off by default; on the main port only with METRICS_PUBLIC; on its own port with METRICS_PORT', async () => {
  const off = await buildTestApp(testConfig(db))
  assert.equal((await off.inject('/metrics')).statusCode, 404)
  const notPublic = await buildTestApp(testConfig(db, { METRICS_ENABLED: true }))
  assert.equal((await notPublic.inject('/metrics')).statusCode, 404, 'METRICS_ENABLED alone does not expose the public port')

  const app = await buildTestApp(testConfig(db, { METRICS_ENABLED: true, METRICS_PUBLIC: true }))
  const t = await signup(app)
  await app.inject({ url: '/api/v1/tenant', headers: bearer(t) })
  await app.inject({ url: '/api/v1/entitlements/check?feature=seats', headers: bearer(t) })
  await app.inject({ url: '/api/v1/entitlements/check?feature=seats', headers: bearer(t) })
  const res = await app.inject('/metrics')
  assert.equal(res.statusCode, 200)
  assert.match(String(res.headers['content-type']), /text\/plain/)
  for (const name of [
    'govula_http_request_duration_seconds_bucket{le="0.001",method="GET",route="/api/v1/tenant",status_code="200"}',
    'govula_db_pool_connections{state="active"}', 'govula_db_pool_connections{state="idle"}', 'govula_db_pool_waiting_clients',
    'govula_entitlement_cache_hits_total', 'govula_entitlement_cache_misses_total', 'govula_entitlement_cache_invalidations_total',
    'govula_entitlement_loads_total',
    'govula_audit_append_seconds_count', 'govula_ready 1', 'process_cpu_user_seconds_total',
    'nodejs_heap_size_used_bytes'
  ]) assert.ok(res.body.includes(name), `${name} is exported`)
  assert.match(res.body, /govula_entitlement_cache_hits_total [1-9]/)

  const port = await freePort()
  const separate = await buildTestApp(testConfig(db, { METRICS_ENABLED: true, METRICS_PORT: port }))
  await separate.listen({ port: 0, host: '127.0.0.1' })
  assert.equal((await separate.inject('/metrics')).statusCode, 404, 'not on the public listener')
  const scraped = await fetch(`http://127.0.0.1:${port}/metrics`)
  assert.equal(scraped.status, 200)
  assert.match(await scraped.text(), /govula_db_pool_connections/)

  // The metrics port taken: the error is logged, the API still serves.
  const logs = captureLogs()
  const clash = await buildTestApp(testConfig(db, { METRICS_ENABLED: true, METRICS_PORT: port, LOG_LEVEL: 'info' }), { logs })
  await clash.listen({ port: 0, host: '127.0.0.1' })
  // onListen hooks run after listen() resolves: poll for the line.
  await waitFor(() => logs.lines.some(l => l.msg === 'metrics listener failed: no metrics from this instance'),
    { what: 'the metrics listener error logged' })
  const address = clash.server.address() as { port: number }
  assert.equal((await fetch(`http://127.0.0.1:${address.port}/health`)).status, 200)
})
