// The command line of npm run bench, and what it selects.
import { parseArgs } from 'node:util'

export interface BenchOptions {
  quick: boolean
  connections: number
  /** One measured run, s. */
  durationS: number
  /** One warm-up round, s (0: no warm-up). */
  warmupS: number
  /** The untimed run before each measured one (pools refilled after the other targets' turns), s. */
  primeS: number
  /** Measured runs per target, interleaved with the targets it is compared with. */
  rounds: number
  soakS: number
  dbMax: number
  cpuProf: string | undefined
  out: string
  noPin: boolean
  /** The command as typed, for the report. */
  command: string
  /** Selected by --only (or --quick); everything without either. */
  wanted (name: string): boolean
}

// --quick: the tenant read, its baselines and the cheap service routes; nothing that needs
// argon2 sessions, another server, or a second cluster.
export const QUICK = [
  'baseline-hello', 'baseline-four-round-trips', 'tenant-read', 'baseline-one-round-trip', 'express-tenant-read',
  'recording-ingest', 'entitlement-check-memory'
]

export function parseOptions (argv: string[]): BenchOptions {
  const { values: args } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean', default: false },
      connections: { type: 'string', default: '50' },
      duration: { type: 'string' },
      warmup: { type: 'string' },
      'db-max-connections': { type: 'string', default: '20' },
      only: { type: 'string' },
      soak: { type: 'string' },
      rounds: { type: 'string', default: '3' },
      'cpu-prof': { type: 'string' },
      out: { type: 'string', default: 'bench/results.json' },
      'no-pin': { type: 'boolean', default: false }
    }
  })
  const quick = args.quick!
  const connections = Number(args.connections)
  const durationS = Number(args.duration ?? (quick ? 2 : 10))
  const warmupS = Number(args.warmup ?? (quick ? 1 : 3))
  const dbMax = Number(args['db-max-connections'])
  const soakS = Number(args.soak ?? (quick ? 0 : 60))
  const rounds = Number(args.rounds)
  for (const [flag, v] of Object.entries({ connections, duration: durationS, warmup: warmupS, 'db-max-connections': dbMax, soak: soakS })) {
    if (!Number.isFinite(v) || v < 0) throw new Error(`invalid --${flag}`)
  }
  if (!Number.isInteger(rounds) || rounds < 1) throw new Error('invalid --rounds (a whole number, at least 1)')
  if (connections < 1 || durationS <= 0) throw new Error('--connections and --duration must be positive')
  const only = args.only ? new Set(args.only.split(',').map(s => s.trim())) : quick ? new Set(QUICK) : null
  return {
    quick,
    connections,
    durationS,
    warmupS,
    primeS: Math.min(1, warmupS, durationS / 4),
    rounds,
    soakS,
    dbMax,
    cpuProf: args['cpu-prof'],
    out: args.out!,
    noPin: args['no-pin']!,
    command: `npm run bench${argv.length ? ' -- ' + argv.join(' ') : ''}`,
    wanted: (name: string) => !only || only.has(name)
  }
}
