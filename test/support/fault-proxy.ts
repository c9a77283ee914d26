import net from 'node:net'
import { after } from 'node:test'

export interface FaultProxy {
  port: number
  /** When each client connection was accepted (ms since the epoch), refused ones included. */
  accepted: number[]
  /** Every byte, in both directions, is forwarded `ms` after it arrived (0: at once). Order is kept. */
  latency(ms: number): void
  /** Holds every byte, in both directions, on every connection (new ones are accepted, then hear nothing). */
  stall(): void
  /** Ends a stall or a latency: what was held is forwarded at once, in order. */
  heal(): void
  /** Open connections are cut and new ones are refused. */
  down(): void
  up(): void
  close(): Promise<void>
}

interface Chunk { data: Buffer, due: number }

/**
 * A TCP proxy in front of Postgres with the faults the tests inject: latency, a stall (bytes
 * held, the connection left open) and an outage. It faults one app's connections without
 * touching the server other test files share.
 */
export async function startFaultProxy (target: { host: string, port: number }): Promise<FaultProxy> {
  const sockets = new Set<net.Socket>()
  const relays = new Set<{ queue: Chunk[], pump: () => void }>()
  let delayMs = 0
  let stalled = false
  let isDown = false

  /** Forwards from `from` to `to` through a queue that honours the current latency and stall. */
  function relay (from: net.Socket, to: net.Socket) {
    const queue: Chunk[] = []
    let timer: NodeJS.Timeout | undefined
    const pump = () => {
      clearTimeout(timer)
      timer = undefined
      if (stalled || to.destroyed) return
      for (let next = queue[0]; next; next = queue[0]) {
        const wait = next.due - Date.now()
        if (wait > 0) {
          timer = setTimeout(pump, wait)
          return
        }
        to.write(queue.shift()!.data)
      }
    }
    const entry = { queue, pump }
    relays.add(entry)
    from.on('data', (data: Buffer) => {
      queue.push({ data, due: Date.now() + delayMs })
      pump()
    })
    from.on('close', () => { clearTimeout(timer); relays.delete(entry) })
  }

  const accepted: number[] = []
  const server = net.createServer((client) => {
    accepted.push(Date.now())
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
    relay(client, upstream)
    relay(upstream, client)
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  return {
    port: (server.address() as net.AddressInfo).port,
    accepted,
    latency (ms) { delayMs = ms },
    stall () { stalled = true },
    heal () {
      stalled = false
      delayMs = 0
      for (const { queue, pump } of relays) {
        for (const chunk of queue) chunk.due = 0
        pump()
      }
    },
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

/** A fault proxy in front of the server `url` names (Postgres), closed after the test. */
export async function proxyFor (url: string): Promise<FaultProxy> {
  const target = new URL(url)
  const proxy = await startFaultProxy({ host: target.hostname, port: Number(target.port || 5432) })
  after(() => proxy.close())
  return proxy
}

/** The same URL with host and port replaced (to route a connection through a proxy). */
export function viaPort (url: string, port: number) {
  const u = new URL(url)
  u.hostname = '127.0.0.1'
  u.port = String(port)
  return u.toString()
}
