import { hash, verify, type Algorithm } from '@node-rs/argon2'

// Algorithm.Argon2id; the package exports it as a const enum, which isolated modules cannot read.
const ARGON2ID = 2 as Algorithm

export interface PasswordPolicy {
  memoryKiB: number
  timeCost: number
  parallelism: number
  /** Hashes computed at once; each holds `memoryKiB` of memory while it runs. */
  maxConcurrency: number
}

export const PASSWORD_MIN = 8
// No truncation happens (argon2 hashes every byte); the cap only bounds the work per request.
export const PASSWORD_MAX = 256

/** A counting semaphore: at most `limit` tasks run, the rest wait in order. */
export function createLimiter (limit: number) {
  let active = 0
  const waiting: Array<() => void> = []
  return async function run<T> (task: () => Promise<T>): Promise<T> {
    if (active >= limit) await new Promise<void>(resolve => waiting.push(resolve))
    else active++
    try {
      return await task()
    } finally {
      const next = waiting.shift()
      if (next) next()
      else active--
    }
  }
}

export interface PasswordHasher {
  hash(password: string): Promise<string>
  /** Verifies against `stored`, or against a dummy hash when there is no user, so both cost the same. */
  verify(stored: string | null, password: string): Promise<boolean>
  /** True when `stored` was made with other parameters than the current policy's. */
  needsRehash(stored: string): boolean
}

/** Argon2id (OWASP minimum: 19 MiB, t=2, p=1) with bounded concurrency. */
export async function createPasswordHasher (policy: PasswordPolicy): Promise<PasswordHasher> {
  const options = { algorithm: ARGON2ID, memoryCost: policy.memoryKiB, timeCost: policy.timeCost, parallelism: policy.parallelism }
  const limit = createLimiter(policy.maxConcurrency)
  const expected = `$argon2id$v=19$m=${policy.memoryKiB},t=${policy.timeCost},p=${policy.parallelism}$`
  const dummy = await hash('not a real password: equalises the time of unknown accounts', options)
  return {
    hash: (password) => limit(() => hash(password, options)),
    verify: (stored, password) => limit(async () => {
      try {
        return await verify(stored ?? dummy, password) && stored !== null
      } catch {
        return false // a malformed stored hash never authenticates
      }
    }),
    needsRehash: (stored) => !stored.startsWith(expected)
  }
}
