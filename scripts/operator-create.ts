// `npm run operator:create -- --email E --password P`: creates an operator (a user with the
// operator flag) through the same service function as the boot-time bootstrap, with the
// configured argon2 parameters. Writes as the owner role (MIGRATION_DATABASE_URL, which defaults
// to DATABASE_URL): the runtime role cannot set is_operator. Exits 0 when created, 1 when a user
// with that email already exists (nothing is changed), 2 when it could not run.
import { parseArgs } from 'node:util'
import pg from 'pg'
import pino from 'pino'
import { ConfigError, databaseUrls, loadConfig } from '../config.js'
import { normaliseEmail } from '../services/accounts.js'
import { appendAudit } from '../services/audit.js'
import { createDatabase } from '../infra/database.js'
import { createContextSigner, loadContextKey } from '../infra/request-context.js'
import { PASSWORD_MAX, PASSWORD_MIN } from '../infra/passwords.js'
import { createServices } from '../services/index.js'

const USAGE = 'usage: npm run operator:create -- --email <email> --password <password>'

class UsageError extends Error {}

function parse () {
  let values
  try {
    ({ values } = parseArgs({ options: { email: { type: 'string' }, password: { type: 'string' } }, strict: true }))
  } catch (err) {
    throw new UsageError((err as Error).message)
  }
  const { email, password } = values
  if (!email) throw new UsageError('--email is required')
  if (!password) throw new UsageError('--password is required')
  // The same rules as sign-up (routes/auth): a plausible address, 8 to 256 characters.
  if (email.length > 254 || !/^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(email.trim())) {
    throw new UsageError(`--email ${JSON.stringify(email)} is not an email address`)
  }
  if (password.length < PASSWORD_MIN || password.length > PASSWORD_MAX) {
    throw new UsageError(`--password must be ${PASSWORD_MIN} to ${PASSWORD_MAX} characters (got ${password.length})`)
  }
  return { email: normaliseEmail(email), password }
}

let pool: pg.Pool | undefined
let code = 0
try {
  const { email, password } = parse()
  const config = loadConfig(process.env)
  if (!config.DATABASE_URL) throw new ConfigError('DATABASE_URL', 'must be set: the database to create the operator in')
  pool = new pg.Pool({ connectionString: databaseUrls(config).runtime, max: 1, application_name: 'govula-operator-create' })
  // The runtime pool signs its row-level security context with the key only the owner reads.
  const db = createDatabase(pool, await loadContextKey(createContextSigner(), databaseUrls(config).migration))
  // One hash at a time: a script creates one account.
  const { accounts } = await createServices({
    config: { ...config, ARGON2_MAX_CONCURRENCY: 1 }, db, audit: appendAudit, log: pino({ level: 'silent' })
  })
  // As the owner role (MIGRATION_DATABASE_URL, else DATABASE_URL): the runtime role cannot set is_operator.
  const outcome = await accounts.ensureOperator(databaseUrls(config).migration, email, password)
  if (outcome === 'exists') {
    console.error(`a user with the email ${email} already exists: nothing changed`)
    code = 1
  } else {
    console.log(`operator ${email} created`)
  }
} catch (err) {
  if (err instanceof UsageError) console.error(`${err.message}\n${USAGE}`)
  else if (err instanceof ConfigError) console.error(err.message)
  else console.error(`operator:create failed: ${(err as Error).message}`)
  code = 2
} finally {
  await pool?.end()
}
process.exit(code)
