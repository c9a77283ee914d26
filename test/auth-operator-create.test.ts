import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { test } from 'node:test'
import { promisify } from 'node:util'
import type { SessionEnvelope } from '../services/accounts.js'
import { adminClient, buildTestApp, createTestDatabase, testConfig } from './support/app.js'
import { bearer, login, uniqueEmail } from './support/actors.js'
import { assertProblem } from './support/assertions.js'

const db = await createTestDatabase()
const admin = await adminClient(db)

/** `npm run operator:create -- …args`, as the package script runs it. */
// It writes as the owner role (the runtime role cannot set is_operator), as a deployment runs it.
async function operatorCreate (
  args: string[],
  env: Record<string, string> = { DATABASE_URL: db.runtimeUrl, MIGRATION_DATABASE_URL: db.ownerUrl }
) {
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, ['--import', 'tsx', 'scripts/operator-create.ts', ...args],
      { env: { PATH: process.env.PATH!, ...env }, encoding: 'utf8' })
    return { code: 0, stdout, stderr }
  } catch (err) {
    const e = err as { code: number, stdout: string, stderr: string }
    return { code: e.code, stdout: e.stdout, stderr: e.stderr }
  }
}

test('operator:create makes an operator who logs in with tenant null; the same email again exits 1 and changes nothing', async () => {
  const email = uniqueEmail('Ops')
  const created = await operatorCreate(['--email', email, '--password', 'operator secret 1'])
  assert.equal(created.code, 0, created.stderr)
  assert.match(created.stdout, new RegExp(`operator ${email.toLowerCase()} created`))
  assert.doesNotMatch(created.stdout + created.stderr, /operator secret 1/, 'the password is never echoed')

  const { rows: [user] } = await admin.query('SELECT email, is_operator, password_hash FROM users WHERE lower(email) = lower($1)', [email])
  assert.equal(user.email, email.toLowerCase())
  assert.equal(user.is_operator, true)
  assert.match(user.password_hash, /^\$argon2id\$v=19\$m=19456,t=2,p=1\$/)

  const app = await buildTestApp(testConfig(db))
  const res = await login(app, { email, password: 'operator secret 1' })
  assert.equal(res.statusCode, 200, res.body)
  const op = res.json() as SessionEnvelope
  assert.equal(op.tenant, null)
  assert.equal((await app.inject({ url: '/api/v1/operator/tenants', headers: bearer(op) })).statusCode, 200)

  const again = await operatorCreate(['--email', email.toUpperCase(), '--password', 'a different password'])
  assert.equal(again.code, 1)
  assert.match(again.stderr, /already exists/)
  assertProblem(await login(app, { email, password: 'a different password' }), 401, 'AUTH_INVALID_CREDENTIALS')
  const { rows: [{ n }] } = await admin.query('SELECT count(*)::int AS n FROM users WHERE lower(email) = lower($1)', [email])
  assert.equal(n, 1)
})

test('operator:create refuses bad arguments and a missing DATABASE_URL with a clear message (exit 2)', async () => {
  const cases: Array<[string[], RegExp, Record<string, string>?]> = [
    [['--email', uniqueEmail()], /--password is required/],
    [['--email', uniqueEmail(), '--password', 'short'], /--password must be 8 to 256 characters/],
    [['--email', uniqueEmail(), '--password', 'long enough pw', '--admin'], /Unknown option '--admin'/],
    [['--email', uniqueEmail(), '--password', 'long enough pw'], /DATABASE_URL must be set/, {}]
  ]
  const operators = async () => (await admin.query('SELECT count(*)::int AS n FROM users WHERE is_operator')).rows[0].n as number
  const before = await operators()
  const results = await Promise.all(cases.map(([args, , env]) => operatorCreate(args, env)))
  for (const [i, r] of results.entries()) {
    assert.equal(r.code, 2, `${cases[i]![0].join(' ')}: ${r.stderr}`)
    assert.match(r.stderr, cases[i]![1])
  }
  assert.equal(await operators(), before, 'nothing was created')
})
