// Only bench/ imports this path still (bench/support.ts, bench/lib/startup.ts): the harness is app.ts.
export { startTestCluster, tempDir } from './app.js'
