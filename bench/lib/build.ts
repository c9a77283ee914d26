// Compiles the service and the baselines once, with tsc and the build's own settings
// (tsconfig.build.json), into a private folder: the bench runs `node server.js` as
// production does, without touching the dist/ that `npm run build` owns.
import { spawnSync } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

export const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const CACHE = path.join(ROOT, 'node_modules', '.cache', 'govula-bench')
export const BUILD_DIR = path.join(CACHE, 'dist')

/** Incremental: a second run with unchanged sources takes a second or two. */
export function buildService (): { dir: string, ms: number, warnings: string } {
  const t0 = Date.now()
  mkdirSync(CACHE, { recursive: true })
  const tsconfig = path.join(CACHE, 'tsconfig.json')
  writeFileSync(tsconfig, JSON.stringify({
    extends: path.join(ROOT, 'tsconfig.build.json'),
    compilerOptions: {
      outDir: BUILD_DIR,
      rootDir: ROOT,
      incremental: true,
      tsBuildInfoFile: path.join(CACHE, 'tsbuildinfo'),
      sourceMap: false
    },
    include: ['*.ts', 'plugins', 'routes', 'services', 'infra', 'jobs', 'db', 'bench/baselines'].map(p => path.join(ROOT, p)),
    exclude: ['node_modules', 'dist', '.data', 'test'].map(p => path.join(ROOT, p))
  }, null, 2))
  const tsc = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc')
  const r = spawnSync(process.execPath, [tsc, '-p', tsconfig], { cwd: ROOT, encoding: 'utf8' })
  // Type errors still emit JavaScript (as `npm run build` would): a colleague's unfinished file
  // does not stop the bench, but it is reported. No output at all is a failure.
  const warnings = r.status === 0 ? '' : `${r.stdout}${r.stderr}`.trim()
  if (r.status !== 0 && !existsSync(path.join(BUILD_DIR, 'server.js'))) {
    throw new Error(`the build failed (tsc -p ${tsconfig}):\n${warnings}`)
  }
  // What the compiled service reads at run time, as scripts/copy-assets.mjs copies it.
  for (const dir of ['db/migrations', 'public']) rmSync(path.join(BUILD_DIR, dir), { recursive: true, force: true })
  cpSync(path.join(ROOT, 'db', 'migrations'), path.join(BUILD_DIR, 'db', 'migrations'), { recursive: true })
  if (existsSync(path.join(ROOT, 'public'))) cpSync(path.join(ROOT, 'public'), path.join(BUILD_DIR, 'public'), { recursive: true })
  // Under node_modules the package scope lookup stops: declare the module type here.
  writeFileSync(path.join(BUILD_DIR, 'package.json'), '{ "type": "module" }\n')
  return { dir: BUILD_DIR, ms: Date.now() - t0, warnings }
}
