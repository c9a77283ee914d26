// A TCP proxy in front of Postgres that a test controls, so "the database went away" can be
// simulated for one app without stopping the server other test files share. It is the fault
// proxy (support/fault-proxy.ts) used for its outage alone: down() and up().
export { startFaultProxy as startTcpProxy, type FaultProxy as TcpProxy } from './fault-proxy.js'

/** The same URL with host and port replaced (to route a connection through a proxy). */
export function viaPort (url: string, port: number) {
  const u = new URL(url)
  u.hostname = '127.0.0.1'
  u.port = String(port)
  return u.toString()
}
