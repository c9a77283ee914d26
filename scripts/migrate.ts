// `npm run migrate`: applies pending migrations as MIGRATION_DATABASE_URL (or DATABASE_URL).
import { ConfigError, loadConfig } from '../config.js'
import { migrate } from '../db/migrate.js'

try {
  const config = loadConfig(process.env)
  const url = config.MIGRATION_DATABASE_URL ?? config.DATABASE_URL
  if (!url) throw new ConfigError('MIGRATION_DATABASE_URL', 'or DATABASE_URL must be set')
  const applied = await migrate(url)
  console.log(applied.length ? `applied ${applied.join(', ')}` : 'database is up to date')
} catch (err) {
  console.error(err instanceof ConfigError ? err.message : `migration failed: ${(err as Error).message}`)
  process.exit(1)
}
