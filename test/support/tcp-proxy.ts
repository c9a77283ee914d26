import net from 'node:net'

export interface TcpProxy {
  port: number
  /** Takes the upstream "down": open connections are cut and new ones are refused. */
  down(): void
  up(): void
  close(): Promise<void>
}

/**
 * A TCP proxy in front of Postgres that a test controls, so "the database went away" can be
 * simulated for one app without stopping the server other test files share.
 */
export async function startTcpProxy (target: { host: string, port: number }): Promise<TcpProxy> {
  const sockets = new Set<net.Socket>()
  let isDown = false
  const server = net.createServer((client) => {
    if (isDown) {
      client.destroy()
      return
    }
    const upstream = net.connect(target.port, target.host)
    sockets.add(client)
    sockets.add(upstream)
    const cleanup = () => {
      client.destroy()
      upstream.destroy()
      sockets.delete(client)
      sockets.delete(upstream)
    }
    client.on('error', cleanup).on('close', cleanup)
    upstream.on('error', cleanup).on('close', cleanup)
    client.pipe(upstream)
    upstream.pipe(client)
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  return {
    port: (server.address() as net.AddressInfo).port,
    down () {
      isDown = true
      for (const s of sockets) s.destroy()
      sockets.clear()
    },
    up () { isDown = false },
    close () {
      for (const s of sockets) s.destroy()
      return new Promise(resolve => server.close(() => resolve()))
    }
  }
}

/** The same URL with host and port replaced (to route a connection through a proxy). */
export function viaPort (url: string, port: number) {
  const u = new URL(url)
  u.hostname = '127.0.0.1'
  u.port = String(port)
  return u.toString()
}
