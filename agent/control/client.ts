// The CLI's side of the control API: an AgentApi that forwards every call over the agent's unix socket
// (see server.ts for the endpoints). Remote errors come back as Errors with the agent-side `name`.

import { request, type IncomingMessage } from 'node:http'
import { dirname, resolve } from 'node:path'
import type { HomeLayout } from '../core/home.js'
import type { AcceptResult, AgentApi, AgentStatus, DiffOptions, DiffRequest, DiffSummary, EventsOptions, LimitRequest, LinkStatus, PathChange, PublishRequest, PublishSummary, RemovedPeer, SubscribeRequest, SyncProgress, SyncResult, VerifyOptions, VerifySummary, WaitForSyncOptions } from '../api/api.js'
import { AGENT_EVENT_TYPES, type AgentEvent } from '../api/events.js'
import { AgentNotRunningError, RemoteError } from './errors.js'

/** Short calls (status, subscribe, trust…) must be answered within this; publish, verify and sync have no deadline but the caller's signal. */
export const DEFAULT_CONTROL_CALL_TIMEOUT_MS = 30_000
/** How long connectAgent waits for the agent to answer its ping. */
export const CONNECT_TIMEOUT_MS = 5_000
/** A status with thousands of versions and peers stays far below this. */
export const MAX_CONTROL_RESPONSE_BYTES = 64 * 1024 * 1024
/** One NDJSON event of the sync stream (a progress record is a few hundred bytes). */
export const MAX_SYNC_EVENT_BYTES = 1024 * 1024

export interface ControlClientInit {
  /** Deadline for short calls; default DEFAULT_CONTROL_CALL_TIMEOUT_MS. */
  callTimeoutMs?: number
  /** Home directory, for the "start it with" hint (default: the socket's directory). */
  home?: string
}

export class ControlClient implements AgentApi {
  private readonly callTimeoutMs: number
  private readonly home: string

  constructor (readonly socketPath: string, init: ControlClientInit = {}) {
    this.callTimeoutMs = init.callTimeoutMs ?? DEFAULT_CONTROL_CALL_TIMEOUT_MS
    this.home = init.home ?? dirname(socketPath)
  }

  async ping (timeoutMs = CONNECT_TIMEOUT_MS): Promise<{ pid: number }> {
    return await this.call('GET', '/v1/ping', undefined, { timeoutMs })
  }

  async status (): Promise<AgentStatus> {
    return await this.call('GET', '/v1/status')
  }

  async publish (req: PublishRequest, signal?: AbortSignal): Promise<PublishSummary> {
    // The agent has its own working directory: send absolute paths.
    return await this.call('POST', '/v1/publish', { ...req, source: resolve(req.source) }, { signal, timeoutMs: 0 })
  }

  async subscribe (req: SubscribeRequest): Promise<void> {
    await this.call('POST', '/v1/subscribe', { ...req, to: resolve(req.to), seed: req.seed === undefined ? undefined : resolve(req.seed) })
  }

  async unsubscribe (tree: string): Promise<void> {
    await this.call('POST', '/v1/unsubscribe', { tree })
  }

  async addPeer (addr: string, name?: string): Promise<void> {
    await this.call('POST', '/v1/peers', { addr, name })
  }

  async removePeer (peer: string): Promise<RemovedPeer> {
    return await this.call('POST', '/v1/peers/remove', { peer })
  }

  async trust (tree: string, publisherKey: string): Promise<void> {
    await this.call('POST', '/v1/trust', { tree, publisherKey })
  }

  async setLimit (request: LimitRequest): Promise<LinkStatus> {
    return await this.call('POST', '/v1/limit', request)
  }

  async setTreeWeight (tree: string, weight?: number): Promise<number> {
    return (await this.call<{ weight: number }>('POST', '/v1/weight', { tree, weight: weight ?? null })).weight
  }

  async verify (tree: string, options: VerifyOptions = {}, signal?: AbortSignal): Promise<VerifySummary> {
    return await this.call('POST', '/v1/verify', { tree, seq: options.seq, repair: options.repair === true }, { signal, timeoutMs: 0 })
  }

  async accept (tree: string, seq: number): Promise<AcceptResult> {
    return await this.call('POST', '/v1/accept', { tree, seq })
  }

  async diff (request: DiffRequest, options: DiffOptions): Promise<DiffSummary> {
    const q = new URLSearchParams({ tree: request.tree })
    if (request.from !== undefined) q.set('from', String(request.from))
    if (request.to !== undefined) q.set('to', String(request.to))
    let summary: DiffSummary | undefined
    await this.ndjson(`/v1/diff?${q.toString()}`, options.signal, async value => {
      const e = value as { type?: unknown, change?: unknown, summary?: unknown, error?: { name?: unknown, message?: unknown } }
      if (e.type === 'change' && isRecord(e.change)) { await options.onChange(e.change as unknown as PathChange); return true }
      if (e.type === 'done' && isRecord(e.summary)) { summary = e.summary as unknown as DiffSummary; return false }
      if (e.type === 'error' && isRecord(e.error)) throw new RemoteError(String(e.error.name ?? 'Error'), String(e.error.message ?? ''), 200)
      throw new Error('agent sent an unknown diff line')
    })
    if (summary === undefined) throw new Error('the agent closed the diff stream before it was done (is it stopping?)')
    return summary
  }

  /** Follows the events until the signal aborts (resolves) or the agent goes (rejects). */
  async events (options: EventsOptions): Promise<void> {
    const path = `/v1/events${options.tree === undefined ? '' : `?tree=${encodeURIComponent(options.tree)}`}`
    try {
      await this.ndjson(path, options.signal, async value => {
        const e = value as Partial<AgentEvent>
        if (typeof e.type !== 'string' || !AGENT_EVENT_TYPES.has(e.type) || typeof e.time !== 'string') throw new Error('agent sent an unknown event line')
        options.onEvent(value as AgentEvent)
        return true
      })
    } catch (err) {
      if (options.signal?.aborted === true) return
      throw err
    }
    if (options.signal?.aborted !== true) throw new Error('the agent closed the event stream (is it stopping?)')
  }

  /**
   * An NDJSON answer, line by line through onLine (which says whether to go on; lines wait for it), until
   * it says no or the stream ends. Each line is bounded by MAX_SYNC_EVENT_BYTES.
   */
  private async ndjson (path: string, signal: AbortSignal | undefined, onLine: (value: unknown) => Promise<boolean>): Promise<void> {
    await this.exchange<undefined>('GET', path, undefined, { signal, timeoutMs: 0 }, async (res, settle) => {
      if (res.statusCode !== 200) { settle.reject(await errorOf(res)); return }
      res.setEncoding('utf8')
      let buffered = ''
      for await (const chunk of res as AsyncIterable<string>) {
        buffered += chunk
        let nl: number
        while ((nl = buffered.indexOf('\n')) >= 0) {
          const text = buffered.slice(0, nl)
          buffered = buffered.slice(nl + 1)
          if (text.trim() === '') continue
          let value: unknown
          try { value = JSON.parse(text) } catch { throw new Error(`agent sent a line that is not JSON on ${path.split('?')[0] ?? path}`) }
          if (!(await onLine(value))) { settle.resolve(undefined); return }
        }
        if (buffered.length > MAX_SYNC_EVENT_BYTES) throw new Error(`a line of ${path.split('?')[0] ?? path} exceeds ${MAX_SYNC_EVENT_BYTES} bytes`)
      }
      settle.resolve(undefined)
    })
  }

  async shutdown (): Promise<void> {
    await this.call('POST', '/v1/shutdown', {})
  }

  async waitForSync (tree: string, options: WaitForSyncOptions = {}): Promise<SyncResult> {
    const { signal, onProgress } = options
    const path = `/v1/sync?tree=${encodeURIComponent(tree)}${options.minSeq === undefined ? '' : `&minSeq=${options.minSeq}`}`
    return await this.exchange('GET', path, undefined, { signal, timeoutMs: 0 }, async (res, settle) => {
      if (res.statusCode !== 200) { settle.reject(await errorOf(res)); return }
      res.setEncoding('utf8')
      let buffered = ''
      res.on('data', (chunk: string) => {
        buffered += chunk
        let nl: number
        while ((nl = buffered.indexOf('\n')) >= 0) {
          const text = buffered.slice(0, nl)
          buffered = buffered.slice(nl + 1)
          if (text.trim() === '') continue
          const event = parseSyncEvent(text)
          if (event.type === 'progress') {
            try { onProgress?.(event.progress) } catch (err) { settle.reject(err); return }
          } else if (event.type === 'done') {
            settle.resolve(event.result); return
          } else {
            settle.reject(new RemoteError(event.error.name, event.error.message, 200)); return
          }
        }
        if (buffered.length > MAX_SYNC_EVENT_BYTES) settle.reject(new Error(`sync stream event exceeds ${MAX_SYNC_EVENT_BYTES} bytes`))
      })
      // Without a done/error event first, the stream ended early: the agent stopped or the connection broke.
      const early = (): void => { settle.reject(new Error('the agent closed the sync stream before the sync finished (is it stopping?)')) }
      res.on('end', early)
      res.on('close', early)
      res.on('error', early)
    })
  }

  private async call<T> (method: string, path: string, body?: unknown, opts: CallOptions = {}): Promise<T> {
    return await this.exchange<T>(method, path, body, opts, async (res, settle) => {
      const text = await readBody(res)
      if ((res.statusCode ?? 500) >= 400) { settle.reject(remoteErrorOf(res.statusCode ?? 500, text)); return }
      try {
        settle.resolve(JSON.parse(text) as T)
      } catch {
        settle.reject(new Error(`agent sent a response to ${method} ${path} that is not JSON`))
      }
    })
  }

  /** One HTTP exchange on the socket, with the caller's signal and an optional deadline; settles once. */
  private async exchange<T> (method: string, path: string, body: unknown, opts: CallOptions, onResponse: (res: IncomingMessage, settle: Settle<T>) => Promise<void>): Promise<T> {
    const { signal } = opts
    const timeoutMs = opts.timeoutMs ?? this.callTimeoutMs
    signal?.throwIfAborted()
    const payload = body === undefined ? undefined : JSON.stringify(body)
    return await new Promise<T>((resolvePromise, rejectPromise) => {
      let done = false
      const finish = (): void => {
        done = true
        clearTimeout(timer)
        signal?.removeEventListener('abort', onAbort)
        req.destroy()
      }
      const settle: Settle<T> = {
        resolve: (v) => { if (!done) { finish(); resolvePromise(v) } },
        reject: (e) => { if (!done) { finish(); rejectPromise(e) } },
      }
      const onAbort = (): void => { settle.reject(signal?.reason ?? new Error('aborted')) }
      const timer = timeoutMs > 0
        ? setTimeout(() => { settle.reject(new Error(`agent did not answer ${method} ${path.split('?')[0] ?? path} within ${timeoutMs / 1000} s`)) }, timeoutMs)
        : undefined
      const req = request({
        socketPath: this.socketPath,
        method,
        path,
        agent: false, // one connection per call: no idle keep-alive socket holds the CLI open
        headers: payload === undefined ? {} : { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(payload) },
      }, (res) => {
        onResponse(res, settle).catch((err: unknown) => { settle.reject(err) })
      })
      req.on('error', (err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') settle.reject(new AgentNotRunningError(this.socketPath, this.home))
        else settle.reject(err)
      })
      signal?.addEventListener('abort', onAbort, { once: true })
      req.end(payload)
    })
  }
}

interface CallOptions { signal?: AbortSignal, timeoutMs?: number }
interface Settle<T> { resolve: (v: T) => void, reject: (e: unknown) => void }

type SyncEvent =
  | { type: 'progress', progress: SyncProgress }
  | { type: 'done', result: SyncResult }
  | { type: 'error', error: { name: string, message: string } }

/** The agent is local and ours, but its bytes are still checked for shape before use. */
function parseSyncEvent (text: string): SyncEvent {
  let v: unknown
  try { v = JSON.parse(text) } catch { throw new Error('agent sent a sync event that is not JSON') }
  const e = v as Record<string, unknown> | null
  if (typeof e === 'object' && e !== null) {
    if (e.type === 'progress' && isRecord(e.progress)) return { type: 'progress', progress: e.progress as unknown as SyncProgress }
    if (e.type === 'done' && isRecord(e.result)) return { type: 'done', result: e.result as unknown as SyncResult }
    if (e.type === 'error' && isRecord(e.error)) return { type: 'error', error: { name: String(e.error.name ?? 'Error'), message: String(e.error.message ?? '') } }
  }
  throw new Error(`agent sent an unknown sync event: ${text.slice(0, 200)}`)
}

function isRecord (v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

async function readBody (res: IncomingMessage): Promise<string> {
  const parts: Buffer[] = []
  let size = 0
  for await (const chunk of res as AsyncIterable<Buffer>) {
    size += chunk.byteLength
    if (size > MAX_CONTROL_RESPONSE_BYTES) throw new Error(`agent response exceeds ${MAX_CONTROL_RESPONSE_BYTES} bytes`)
    parts.push(chunk)
  }
  return Buffer.concat(parts).toString('utf8')
}

async function errorOf (res: IncomingMessage): Promise<Error> {
  return remoteErrorOf(res.statusCode ?? 500, await readBody(res))
}

function remoteErrorOf (status: number, text: string): Error {
  try {
    const body = JSON.parse(text) as { error?: { name?: unknown, message?: unknown } }
    if (isRecord(body.error)) return new RemoteError(String(body.error.name ?? 'Error'), String(body.error.message ?? ''), status)
  } catch {}
  return new RemoteError('Error', `agent answered HTTP ${status}: ${text.slice(0, 200)}`, status)
}

/**
 * A client for the agent running on `home`, or undefined when none answers (no socket file, or a socket
 * nobody listens on), so that a command can work locally or print how to start the agent.
 */
export async function connectAgent (home: HomeLayout, init: ControlClientInit = {}): Promise<ControlClient | undefined> {
  const client = new ControlClient(home.controlSocket, { home: home.root, ...init })
  try {
    await client.ping()
    return client
  } catch (err) {
    if (err instanceof AgentNotRunningError) return undefined
    throw err
  }
}
