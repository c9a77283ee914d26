// `npm test`: one Postgres for the run (TEST_DATABASE_URL or embedded), a migrated template,
// then node's test runner over every test file, each of which copies the template.
import { spawn } from 'node:child_process'
import { readdirSync } from 'node:fs'
import path from 'node:path'
import { startTestCluster } from './support/app.js'

const files = process.argv.slice(2).length > 0
  ? process.argv.slice(2)
  : readdirSync('test', { recursive: true, encoding: 'utf8' })
    .filter(f => f.endsWith('.test.ts'))
    .map(f => path.join('test', f))
    .sort()

const started = Date.now()
const cluster = await startTestCluster(process.env.TEST_DATABASE_URL)
const source = process.env.TEST_DATABASE_URL ? 'TEST_DATABASE_URL' : 'embedded'
console.log(`# postgres ready for tests in ${Date.now() - started} ms (${source})`)

const child = spawn(process.execPath, [
  '--import', 'tsx', '--test', '--test-reporter=spec', `--test-concurrency=${process.env.TEST_CONCURRENCY ?? 2}`, ...files
], {
  stdio: 'inherit',
  env: {
    ...process.env,
    TEST_ADMIN_URL: cluster.adminUrl,
    TEST_TEMPLATE_DB: cluster.template,
    TEST_OWNER_PASSWORD: cluster.ownerPassword,
    TEST_APP_PASSWORD: cluster.appPassword
  }
})
const stop = () => child.kill('SIGTERM')
process.once('SIGINT', stop)
process.once('SIGTERM', stop)
const code = await new Promise<number>(resolve => child.on('exit', (c, signal) => resolve(c ?? (signal ? 1 : 0))))
await cluster.stop()
console.log(`# test run finished in ${((Date.now() - started) / 1000).toFixed(1)} s`)
process.exit(code)
