// `npm run migrate`: applies pending migrations as MIGRATION_DATABASE_URL (or DATABASE_URL).
import { ConfigError, databaseUrls, loadConfig } from '../config.js'
import { migrate } from '../db/migrate.js'

try {
  const config = loadConfig(process.env)
  const applied = await migrate(databaseUrls(config).migration)
  console.log(applied.length ? `applied ${applied.join(', ')}` : 'database is up to date')
} catch (err) {
  console.error(err instanceof ConfigError ? err.message : `migration failed: ${(err as Error).message}`)
  process.exit(1)
}
