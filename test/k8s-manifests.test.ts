// deploy/k8s/ and docker-compose.yml cannot run here: these tests hold them to the app instead
// (probe paths and ports, settings that exist, shutdown timing, the cron jobs' names and calls).
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import path from 'node:path'
import { test } from 'node:test'
import { parse, parseAllDocuments } from 'yaml'
import { ConfigSchema, loadConfig } from '../config.js'
import { buildTestApp, createTestDatabase, testConfig } from './support/app.js'

const K8S = 'deploy/k8s'
// The internal cron mount (docs/jobs.md): external schedulers call these names, so they are a contract.
const JOBS = ['audit-checkpoint', 'lifecycle-transitions', 'purge-recordings', 'purge-sessions']
const SETTINGS = new Set(Object.keys(ConfigSchema.properties))

interface Manifest {
  file: string
  apiVersion: string
  kind: string
  metadata: { name: string, labels?: Record<string, string> }
  spec?: any
  data?: Record<string, string>
  stringData?: Record<string, string>
  resources?: string[]
}
interface Container {
  name: string
  image: string
  ports?: Array<{ name?: string, containerPort: number }>
  env?: Array<{ name: string, value?: string, valueFrom?: any }>
  envFrom?: any[]
  command?: string[]
  args?: string[]
  [key: string]: any
}

const files = readdirSync(K8S).filter(f => /\.ya?ml$/.test(f)).sort()
const manifests: Manifest[] = files.flatMap(file => parseAllDocuments(readFileSync(path.join(K8S, file), 'utf8')).map(doc => {
  assert.deepEqual(doc.errors.map(e => e.message), [], `${file} parses`)
  return { ...doc.toJS(), file } as Manifest
}))

function one (kind: string, name?: string) {
  const found = manifests.filter(m => m.kind === kind && (name === undefined || m.metadata.name === name))
  assert.equal(found.length, 1, `exactly one ${kind}${name ? ` ${name}` : ''} in ${K8S}`)
  return found[0]!
}

const configMap = one('ConfigMap')
const secret = one('Secret')
const deployment = one('Deployment')
const service = one('Service')
const podSpec = deployment.spec.template.spec
const app: Container = podSpec.containers.find((c: Container) => c.name === 'app')
const cronJobs = manifests.filter(m => m.kind === 'CronJob')
const settings = { ...configMap.data, ...secret.stringData }

/** Every container of every workload, with where it came from. */
function containers () {
  return manifests.flatMap(m => {
    const spec = m.kind === 'CronJob' ? m.spec.jobTemplate.spec.template.spec : m.spec?.template?.spec
    return (spec?.containers ?? []).map((c: Container) => ({ where: `${m.kind} ${m.metadata.name}`, c }))
  }) as Array<{ where: string, c: Container }>
}

const portNumber = (port: number | string) => typeof port === 'number' ? port : app.ports!.find(p => p.name === port)!.containerPort
const subset = (small: Record<string, string>, big: Record<string, string>) => Object.entries(small).every(([k, v]) => big[k] === v)

test('every manifest parses, names itself, and the kustomization lists every file', () => {
  for (const m of manifests) {
    assert.ok(m.apiVersion && m.kind, `${m.file}: apiVersion and kind`)
    if (m.kind !== 'Kustomization') assert.ok(m.metadata?.name, `${m.file}: metadata.name`)
  }
  const kustomization = one('Kustomization')
  assert.deepEqual([...kustomization.resources!].sort(), files.filter(f => f !== kustomization.file))
})

test('every setting the manifests give is one config.ts knows, with a valid value; references resolve', () => {
  for (const key of Object.keys(settings)) assert.ok(SETTINGS.has(key), `${key} (ConfigMap/Secret) is not in ConfigSchema`)
  for (const { where, c } of containers()) {
    for (const e of c.env ?? []) {
      assert.ok(SETTINGS.has(e.name), `${where}: env ${e.name} is not in ConfigSchema`)
      const ref = e.valueFrom?.secretKeyRef
      if (ref) assert.ok(ref.name === secret.metadata.name && ref.key in secret.stringData!, `${where}: ${ref.name}/${ref.key} exists`)
    }
    for (const from of c.envFrom ?? []) {
      if (from.configMapRef) assert.equal(from.configMapRef.name, configMap.metadata.name)
      if (from.secretRef) assert.equal(from.secretRef.name, secret.metadata.name)
    }
  }
  const config = loadConfig(settings) // throws, naming the variable, on a bad value
  assert.equal(config.ENABLE_INTERNAL_CRON, true, 'the CronJobs need the mount')
  assert.ok(config.CRON_SECRET)
  assert.equal(config.DB_STATEMENT_TIMEOUT, 0, 'DATABASE_URL goes through PgBouncer in transaction mode')
  assert.notEqual(new URL(config.DATABASE_DIRECT_URL!).host, new URL(config.DATABASE_URL!).host, 'LISTEN bypasses PgBouncer')
})

test('probes and ports match the app: /health, /api/v1/health, container port = PORT', async () => {
  const config = loadConfig(settings)
  const http = app.ports!.find(p => p.name === 'http')!
  assert.equal(http.containerPort, config.PORT)
  if (config.METRICS_PORT) assert.equal(app.ports!.find(p => p.name === 'metrics')?.containerPort, config.METRICS_PORT)
  assert.equal(app.livenessProbe.httpGet.path, '/health')
  assert.equal(app.startupProbe.httpGet.path, '/health')
  assert.equal(app.readinessProbe.httpGet.path, '/api/v1/health')
  for (const probe of [app.livenessProbe, app.startupProbe, app.readinessProbe]) assert.equal(portNumber(probe.httpGet.port), config.PORT)

  const podLabels = deployment.spec.template.metadata.labels
  assert.ok(subset(deployment.spec.selector.matchLabels, podLabels), 'the Deployment selects its pods')
  assert.ok(subset(service.spec.selector, podLabels), 'the Service selects the pods')
  assert.equal(portNumber(service.spec.ports[0].targetPort), config.PORT)

  // The same paths on the real app answer as the probes expect.
  const db = await createTestDatabase()
  const built = await buildTestApp(testConfig(db))
  assert.equal((await built.inject('/health')).statusCode, 200)
  assert.equal((await built.inject('/api/v1/health')).statusCode, 200)
})

test('shutdown: preStop sleep < terminationGracePeriodSeconds, and the service times out before SIGKILL', () => {
  const config = loadConfig(settings)
  const command: string[] = app.lifecycle.preStop.exec.command
  assert.equal(command[0], 'sleep')
  const preStop = Number(command[1])
  const grace = podSpec.terminationGracePeriodSeconds
  assert.ok(preStop >= 5, 'long enough for endpoint removal to reach kube-proxy and the load balancers')
  assert.ok(preStop < grace, `preStop ${preStop} s < grace ${grace} s`)
  assert.ok(preStop + config.SHUTDOWN_TIMEOUT_MS / 1000 < grace,
    `preStop ${preStop} s + SHUTDOWN_TIMEOUT_MS ${config.SHUTDOWN_TIMEOUT_MS} ms < grace ${grace} s`)
  assert.ok(config.SHUTDOWN_DRAIN_DELAY_MS < config.SHUTDOWN_TIMEOUT_MS)
  assert.equal(deployment.spec.strategy.rollingUpdate.maxUnavailable, 0)
})

test('resources are requested (the HPA scales on CPU) and the HPA and PDB target the Deployment', () => {
  assert.ok(app.resources.requests.cpu && app.resources.requests.memory, 'requests')
  assert.ok(app.resources.limits.cpu && app.resources.limits.memory, 'limits')
  const hpa = one('HorizontalPodAutoscaler')
  assert.deepEqual([hpa.spec.scaleTargetRef.kind, hpa.spec.scaleTargetRef.name], ['Deployment', deployment.metadata.name])
  assert.ok(hpa.spec.minReplicas >= 2 && hpa.spec.maxReplicas >= hpa.spec.minReplicas)
  assert.ok(hpa.spec.metrics.some((m: any) => m.resource?.name === 'cpu'))
  assert.ok(subset(one('PodDisruptionBudget').spec.selector.matchLabels, deployment.spec.template.metadata.labels))
})

const CRON_URL = /http:\/\/([\w.-]+)(?::(\d+))?\/api\/internal\/cron\/([\w-]+)/
const cronCommand = (job: Manifest) => job.spec.jobTemplate.spec.template.spec.containers[0] as Container

test('one CronJob per job, each calling the Service with the secret', () => {
  const calls = cronJobs.map(job => {
    const c = cronCommand(job)
    const match = CRON_URL.exec([...(c.command ?? []), ...(c.args ?? [])].join(' '))
    assert.ok(match, `${job.metadata.name} calls the internal cron mount`)
    assert.equal(match[1], service.metadata.name, 'through the Service')
    assert.equal(Number(match[2] ?? 80), service.spec.ports[0].port)
    assert.ok(c.env?.some(e => e.name === 'CRON_SECRET' && e.valueFrom?.secretKeyRef?.key === 'CRON_SECRET'))
    assert.equal(job.spec.concurrencyPolicy, 'Forbid')
    return match[3]
  })
  assert.deepEqual(calls.sort(), JOBS)
})

const haveCurl = spawnSync('sh', ['-c', 'command -v curl']).status === 0
test(
  'the CronJobs\' commands work against the app (rotating secret, every job runs)',
  { skip: !haveCurl && !process.env.CI && 'curl not installed' }, async () => {
    const db = await createTestDatabase()
    const built = await buildTestApp(testConfig(db, { ENABLE_INTERNAL_CRON: true, CRON_SECRET: 'new-secret,old-secret' }))
    assert.deepEqual(built.jobRunner.names().sort(), JOBS, 'every job of the app has a CronJob, and every CronJob a job')
    await built.listen({ port: 0, host: '127.0.0.1' })
    const { port } = built.server.address() as AddressInfo
    for (const job of cronJobs) {
      const c = cronCommand(job)
      const [shell, flag, script] = c.command!
      const local = script!.replace(`http://${service.metadata.name}/`, `http://127.0.0.1:${port}/`)
      const out = await new Promise<{ code: number | null, stdout: string, stderr: string }>((resolve) => {
        const child = spawn(shell!, [flag!, local], { env: { PATH: process.env.PATH, CRON_SECRET: 'new-secret,old-secret' } })
        let stdout = ''
        let stderr = ''
        child.stdout.on('data', d => { stdout += d })
        child.stderr.on('data', d => { stderr += d })
        child.on('close', code => resolve({ code, stdout, stderr }))
      })
      const name = CRON_URL.exec(script!)![3]!
      assert.equal(out.code, 0, `${job.metadata.name}: ${out.stderr}`)
      const answer = JSON.parse(out.stdout)
      assert.equal(answer.job, name)
      assert.equal(answer.ran, true)
    }
  })

test('docker-compose.yml runs the same topology: nginx → 3 replicas → PgBouncer (transaction) → Postgres, Redis', () => {
  const compose = parse(readFileSync('docker-compose.yml', 'utf8'))
  const services = compose.services
  assert.deepEqual(Object.keys(services).sort(), ['app', 'lb', 'pgbouncer', 'postgres', 'redis'])
  assert.equal(services.app.deploy.replicas, 3)
  const env: Record<string, string> = services.app.environment
  for (const key of Object.keys(env)) assert.ok(SETTINGS.has(key), `compose app env ${key} is not in ConfigSchema`)
  const config = loadConfig(env)
  assert.equal(new URL(config.DATABASE_URL!).host, 'pgbouncer:6432')
  assert.equal(new URL(config.DATABASE_DIRECT_URL!).host, 'postgres:5432')
  assert.equal(new URL(config.MIGRATION_DATABASE_URL!).host, 'postgres:5432')
  assert.ok(config.REDIS_URL && config.ENTITLEMENT_BROADCAST_ENABLED && config.TRUST_PROXY)
  assert.equal(config.DB_STATEMENT_TIMEOUT, 0)

  for (const [name, svc] of Object.entries<any>(services)) {
    for (const volume of svc.volumes ?? []) {
      const source = String(volume).split(':')[0]!
      if (source.startsWith('./')) assert.ok(existsSync(source), `${name} mounts ${source}, which exists`)
    }
  }
  const ini = readFileSync('deploy/pgbouncer/pgbouncer.ini', 'utf8')
  assert.match(ini, /^pool_mode = transaction$/m)
  assert.match(ini, /^listen_port = 6432$/m)
  assert.match(ini, /^ignore_startup_parameters = .*statement_timeout/m)
  const appPassword = decodeURIComponent(new URL(config.DATABASE_URL!).password)
  assert.match(readFileSync('deploy/pgbouncer/userlist.txt', 'utf8'), new RegExp(`^"govula_app" "${appPassword}"$`, 'm'))
  assert.match(readFileSync('deploy/postgres-init.sql', 'utf8'), /ALTER ROLE govula_app IN DATABASE govula SET statement_timeout/)
  const nginx = readFileSync('deploy/nginx/nginx.conf', 'utf8')
  assert.match(nginx, new RegExp(`server app:${config.PORT} resolve`))
  const proxyMount = services.lb.volumes.find((v: string) => v.startsWith('./deploy/nginx/proxy.conf:')).split(':')[1]
  assert.match(nginx, new RegExp(`include ${proxyMount};`))
})
