/*! Govula recorder: records events in the browser and delivers each exactly once to
 * POST /api/v1/recordings/events. Dependency-free; docs/recording.md. */
/* global localStorage, TextEncoder, fetch */
(function (root) {
  'use strict'

  // Every event waits in localStorage, one key per event, until the server acknowledges it:
  // a reload, a closed tab or a server outage loses nothing, and writing one event costs one
  // small setItem however long the queue is. Keys sort in recording order.
  const PREFIX = 'govula-recorder:e:'
  const INGEST_PATH = '/api/v1/recordings/events'
  const DEFAULTS = {
    batchSize: 100, // events per request (the server takes up to 500)
    maxBatchBytes: 262144, // per request (the server takes up to 512 KiB)
    maxPayloadBytes: 16384, // per event, as JSON (the server's limit)
    maxEvents: 10000, // kept at most; beyond it the oldest are dropped
    flushIntervalMs: 2000, // how long a new event waits for company
    retryBaseMs: 1000, // backoff: a random wait up to base * 2^(attempt - 1) ...
    retryMaxMs: 60000 // ... and never longer than this
  }
  // Where the script came from: a page that loads /recorder.js from the server sends there.
  const scriptSrc = root.document?.currentScript?.src || root.location?.href
  const encoder = new TextEncoder()

  let opts = null // start()'s options; null while stopped
  let queue = [] // [{ key, json, bytes }], oldest first; key null: kept in memory only
  let sending = null // the flush in flight
  let timer = null
  let timerDue = 0
  let attempt = 0 // consecutive failures, for the backoff
  let batchLimit = 1 // shrinks while the server refuses batches as too large or invalid
  let blocked = false // 401/403: no retry until flush() or start()
  let dropped = 0
  let rejected = 0
  let seq = 0

  function storage () {
    try { return localStorage } catch { return null } // disabled storage throws on access
  }

  function uuid () {
    if (root.crypto.randomUUID) return root.crypto.randomUUID()
    // A page on plain http (not a secure context) has no randomUUID: a v4 UUID by hand.
    const b = root.crypto.getRandomValues(new Uint8Array(16))
    b[6] = (b[6] & 0x0f) | 0x40
    b[8] = (b[8] & 0x3f) | 0x80
    const h = Array.from(b, x => (x + 0x100).toString(16).slice(1)).join('')
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`
  }

  function report (error) {
    try { opts?.onError?.(error) } catch { /* the page's callback must not break delivery */ }
  }

  function load () {
    const s = storage()
    if (!s) return []
    const keys = []
    for (let i = 0; i < s.length; i++) {
      const key = s.key(i)
      if (key?.startsWith(PREFIX)) keys.push(key)
    }
    return keys.sort()
      .map(key => ({ key, json: s.getItem(key) }))
      .filter(e => e.json)
      .map(e => ({ ...e, bytes: encoder.encode(e.json).length }))
  }

  function forget (entry) {
    if (entry.key) storage()?.removeItem(entry.key)
  }

  function dropOldest () {
    forget(queue.shift())
    dropped++
  }

  // Stores one event, dropping the oldest while the quota is reached. When even an empty
  // queue leaves no room (the page's own data fills the quota), the event is kept in memory.
  function persist (entry) {
    while (queue.length >= opts.maxEvents) dropOldest()
    if (!store(entry)) entry.key = null
    queue.push(entry)
  }

  function store (entry) {
    const s = storage()
    if (!s) return false
    for (;;) {
      try {
        s.setItem(entry.key, entry.json)
        return true
      } catch (err) {
        if (queue.length === 0) {
          report({ kind: 'storage', message: `${err.message}: this event is kept in memory only`, retrying: true })
          return false
        }
        dropOldest()
      }
    }
  }

  function schedule (delay) {
    if (!opts || blocked) return
    const due = Date.now() + delay
    if (timer !== null) {
      if (timerDue <= due) return
      clearTimeout(timer)
    }
    timerDue = due
    timer = setTimeout(() => {
      timer = null
      flushQueue()
    }, delay)
  }

  function clearTimer () {
    if (timer !== null) clearTimeout(timer)
    timer = null
  }

  // Full jitter: a random wait up to the exponential bound, so clients that failed together
  // do not come back together.
  function backoff (minimumMs = 0) {
    attempt++
    const bound = Math.min(opts.retryMaxMs, opts.retryBaseMs * 2 ** (attempt - 1))
    const delay = Math.max(minimumMs, Math.random() * bound)
    schedule(delay)
    return delay
  }

  function nextBatch () {
    const batch = []
    let bytes = 0
    for (const entry of queue) {
      if (batch.length >= batchLimit || (batch.length > 0 && bytes + entry.bytes + 1 > opts.maxBatchBytes)) break
      batch.push(entry)
      bytes += entry.bytes + 1
    }
    return batch
  }

  function acknowledge (batch) {
    const done = new Set(batch)
    batch.forEach(forget)
    queue = queue.filter(e => !done.has(e))
  }

  async function send (batch) {
    const body = `{"events":[${batch.map(e => e.json).join(',')}]}`
    const token = typeof opts.token === 'function' ? await opts.token() : opts.token
    return fetch(opts.endpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body,
      credentials: 'omit',
      // keepalive lets a flush started as the tab hides finish; browsers cap it at 64 KiB.
      keepalive: body.length < 60000
    })
  }

  async function drain () {
    for (;;) {
      if (!opts || blocked || queue.length === 0) return
      const batch = nextBatch()
      let res
      try {
        res = await send(batch)
      } catch (err) {
        if (opts) report({ kind: 'network', message: String(err?.message), retrying: true, retryInMs: backoff() })
        return
      }
      // Acknowledged even if stop() came meanwhile: the server has these events.
      if (res.status === 202) acknowledge(batch)
      if (!opts) return
      if (res.status === 202) {
        attempt = 0
        batchLimit = Math.min(opts.batchSize, batchLimit * 2)
        continue
      }
      const problem = await res.json().catch(() => ({}))
      const error = { kind: 'http', status: res.status, code: problem.code, message: problem.detail || res.statusText }
      if (res.status === 401 || res.status === 403) {
        // Retrying cannot help: the token or the tenant's entitlement must change first.
        blocked = true
        clearTimer()
        report({ ...error, retrying: false })
        return
      }
      if (res.status === 400 || res.status === 413) {
        // Refused as invalid or too large: halve the batch until the culprit is alone, then
        // give that one event up, so the rest do not wait behind it forever.
        if (batch.length > 1) {
          batchLimit = Math.ceil(batch.length / 2)
          continue
        }
        acknowledge(batch)
        rejected++
        report({ ...error, retrying: false, eventRejected: true })
        continue
      }
      // 429, 5xx, anything else: later. A 429 says when.
      const retryAfter = Number(res.headers.get('retry-after'))
      report({ ...error, retrying: true, retryInMs: backoff(res.status === 429 && retryAfter > 0 ? retryAfter * 1000 : 0) })
      return
    }
  }

  function status () {
    return { started: !!opts, blocked, pending: queue.length, dropped, rejected, attempt, retryScheduled: timer !== null }
  }

  function flushQueue () {
    if (!opts) return Promise.resolve(status())
    if (!sending) {
      clearTimer()
      sending = drain().finally(() => { sending = null })
    }
    return sending.then(status)
  }

  function onHidden () {
    if (root.document.visibilityState === 'hidden') flushQueue()
  }

  function onOnline () {
    attempt = 0
    schedule(0)
  }

  const GovulaRecorder = {
    /**
     * start({ endpoint, token, recordingId, onError, ...limits }): token is a string or a
     * function returning one (or a promise of one), called for every request. Events an
     * earlier page left unacknowledged are sent first. Returns the recording id.
     */
    start (options = {}) {
      if (opts) GovulaRecorder.stop()
      if (!options.token) throw new TypeError('GovulaRecorder.start: token is required')
      opts = { ...DEFAULTS, ...options }
      opts.endpoint = String(new URL(options.endpoint || INGEST_PATH, scriptSrc))
      opts.recordingId = options.recordingId || uuid()
      opts.batchSize = Math.max(1, Math.min(500, opts.batchSize))
      batchLimit = opts.batchSize
      blocked = false
      attempt = 0
      queue = load().concat(queue.filter(e => e.key === null))
      if (!storage()) report({ kind: 'storage', message: 'localStorage is not available: events are kept in memory only', retrying: true })
      root.addEventListener?.('online', onOnline)
      root.document?.addEventListener('visibilitychange', onHidden)
      if (queue.length > 0) schedule(0)
      return opts.recordingId
    },

    /** Records one event and returns its id; a flush follows within flushIntervalMs. */
    record (type, payload = {}) {
      if (!opts) throw new Error('GovulaRecorder.record: call start() first')
      if (typeof type !== 'string' || type.length < 1 || type.length > 100) {
        throw new TypeError('GovulaRecorder.record: type must be a string of 1 to 100 characters')
      }
      if (payload === null || typeof payload !== 'object' || Array.isArray(payload)) {
        throw new TypeError('GovulaRecorder.record: payload must be a plain object')
      }
      const size = encoder.encode(JSON.stringify(payload)).length
      if (size > opts.maxPayloadBytes) {
        throw new RangeError(`GovulaRecorder.record: payload is ${size} bytes as JSON; the limit is ${opts.maxPayloadBytes}`)
      }
      const event = { id: uuid(), recordingId: opts.recordingId, type, occurredAt: new Date().toISOString(), payload }
      const json = JSON.stringify(event)
      const key = `${PREFIX}${Date.now().toString(36).padStart(9, '0')}${(seq++ % 1679616).toString(36).padStart(4, '0')}:${event.id}`
      persist({ key, json, bytes: encoder.encode(json).length })
      if (attempt === 0) schedule(queue.length >= batchLimit ? 0 : opts.flushIntervalMs)
      return event.id
    },

    /** Sends what is pending now (also after a 401/403); resolves with status(). */
    flush () {
      if (opts && blocked) {
        blocked = false
        attempt = 0
      }
      return flushQueue()
    },

    /** Stops recording and sending; pending events stay stored for the next start(). */
    stop () {
      clearTimer()
      root.removeEventListener?.('online', onOnline)
      root.document?.removeEventListener('visibilitychange', onHidden)
      opts = null
      return sending ? sending.then(status) : Promise.resolve(status())
    },

    status,
    pending: () => queue.length,
    /** Events dropped unsent since this page loaded, to stay within maxEvents or the quota. */
    droppedCount: () => dropped
  }

  root.GovulaRecorder = GovulaRecorder
})(globalThis)
