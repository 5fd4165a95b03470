// The agent's control server: the AgentApi as JSON over HTTP on a unix socket in the agent's home.
// Never TCP, so nothing on another host can reach it; the socket is chmod 0600 (and the home is 0700).
//
//   GET  /v1/ping                          {pid}: who answers on this socket
//   GET  /v1/status                        AgentStatus
//   POST /v1/publish     {tree,source,label?}       PublishSummary (no timeout; aborted if the client goes)
//   POST /v1/subscribe   {tree,to,include?,exclude?,seed?,seedCopy?,allowEmpty?,maxDropPercent?,gate?,gateTimeoutMs?,onVersion?,onVersionTimeoutMs?}
//   POST /v1/unsubscribe {tree}
//   POST /v1/peers       {addr,name?}
//   POST /v1/peers/remove {peer}                   RemovedPeer {peerId,addr,name?}
//   POST /v1/trust       {tree,publisherKey}
//   POST /v1/verify      {tree,seq?,repair?}        VerifySummary (aborted if the client goes)
//   POST /v1/shutdown                      202, then the agent stops
//   GET  /v1/sync?tree=T                   NDJSON: {type:'progress',progress}… then {type:'done',result}
//                                          or {type:'error',error:{name,message}}
//   GET  /v1/diff?tree=T&from=A&to=B       NDJSON: {type:'change',change}… then {type:'done',summary} (streams.ts)
//   GET  /v1/events?tree=T                 NDJSON: one AgentEvent per line, 'following' first, until the client goes
//   POST /v1/accept      {tree,seq}                AcceptResult: expose a version the gate refused
// Errors: HTTP status from httpStatusOf() and `{error:{name,message}}`.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { connect } from 'node:net'
import { chmod, lstat, unlink } from 'node:fs/promises'
import type { Logger } from '../core/log.js'
import type { AgentApi, SyncProgress } from '../api/api.js'
import { line, streamDiff, streamEvents } from './streams.js'
import { AgentRunningError, BadRequestError, RequestTooLargeError, UnknownEndpointError, errorBody, httpStatusOf } from './errors.js'

/** Control requests are small JSON objects; 1 MiB leaves room for long include/exclude lists. */
export const MAX_CONTROL_BODY_BYTES = 1024 * 1024
/** A client must send its whole request (headers and body) within this; responses may take any time. */
export const CONTROL_REQUEST_TIMEOUT_MS = 30_000
/** How long the stale-socket probe waits for an answer before deciding something else holds the socket. */
export const PROBE_TIMEOUT_MS = 2_000
/** How long close() waits for aborted calls (publish, verify, sync) to return. */
export const CLOSE_GRACE_MS = 10_000
/** sockaddr_un.sun_path is 108 bytes on Linux (104 on macOS), including the NUL. */
export const MAX_SOCKET_PATH_BYTES = 103
/** At most this often a sync waiter gets a progress line (a progress bar redraws no faster); phase changes go at once. */
export const PROGRESS_LINE_MS = 100

export interface ControlServerOptions {
  socketPath: string
  api: AgentApi
  log: Logger
  /** Called (after the 202 is sent) for POST /v1/shutdown; default: api.shutdown(). */
  onShutdown?: () => void
}

export interface ControlServer {
  close (): Promise<void>
}

export async function startControlServer (options: ControlServerOptions): Promise<ControlServer> {
  const { socketPath } = options
  const log = options.log.child({ component: 'control' })
  await prepareSocketPath(socketPath)

  const inFlight = new Set<Promise<void>>()
  const server = createServer({ requestTimeout: CONTROL_REQUEST_TIMEOUT_MS }, (req, res) => {
    const p = handle(req, res, options, log)
      .catch((err: unknown) => { log.error({ err }, 'control request failed') })
      .finally(() => { inFlight.delete(p) })
    inFlight.add(p)
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      reject(err.code === 'EADDRINUSE' ? new AgentRunningError(socketPath) : err)
    })
    server.listen(socketPath, () => { resolve() })
  })
  await chmod(socketPath, 0o600)
  server.on('error', (err) => { log.error({ err }, 'control server error') })
  log.info({ socket: socketPath }, 'control API listening')

  let closed: Promise<void> | undefined
  return {
    async close () {
      closed ??= closeServer(server, inFlight, log)
      await closed
    },
  }
}

/**
 * Stops accepting, cuts open connections (sync streams and publishes would hold close() forever; cutting
 * them aborts their api calls), then waits a bounded time for the handlers to return, so that the agent
 * behind the api is not stopped under a call still running.
 */
async function closeServer (server: Server, inFlight: Set<Promise<void>>, log: Logger): Promise<void> {
  const done = new Promise<void>((resolve) => { server.close(() => { resolve() }) })
  server.closeAllConnections()
  await done
  let timer: NodeJS.Timeout | undefined
  const grace = new Promise<'timeout'>((resolve) => { timer = setTimeout(() => { resolve('timeout') }, CLOSE_GRACE_MS) })
  const outcome = await Promise.race([Promise.allSettled([...inFlight]), grace])
  clearTimeout(timer)
  if (outcome === 'timeout') log.warn({ calls: inFlight.size }, 'control calls still running after close; not waiting for them')
}

/**
 * Makes the socket path free to listen on: a socket file nobody answers on (an agent that crashed) is
 * removed; an answering one means another agent runs on this home, and that is an error.
 */
export async function prepareSocketPath (socketPath: string): Promise<void> {
  if (Buffer.byteLength(socketPath) > MAX_SOCKET_PATH_BYTES) {
    throw new Error(`control socket path ${socketPath} is ${Buffer.byteLength(socketPath)} bytes, longer than a unix socket allows (${MAX_SOCKET_PATH_BYTES}): use a shorter --home`)
  }
  const probe = await probeSocket(socketPath)
  if (probe.state === 'absent') return
  if (probe.state === 'answering') throw new AgentRunningError(socketPath, probe.pid)
  const info = await lstat(socketPath)
  if (!info.isSocket()) throw new Error(`${socketPath} exists and is not a socket; move it away`)
  await unlink(socketPath)
}

type Probe = { state: 'absent' } | { state: 'stale' } | { state: 'answering', pid?: number }

/** Connects to the socket and asks GET /v1/ping; anything that accepts the connection counts as answering. */
async function probeSocket (socketPath: string): Promise<Probe> {
  return await new Promise<Probe>((resolve, reject) => {
    const socket = connect({ path: socketPath })
    let data = ''
    const finish = (p: Probe): void => { clearTimeout(timer); socket.destroy(); resolve(p) }
    const timer = setTimeout(() => { finish({ state: 'answering' }) }, PROBE_TIMEOUT_MS)
    socket.setEncoding('utf8')
    socket.on('connect', () => { socket.write('GET /v1/ping HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n') })
    socket.on('data', (chunk: string) => { if (data.length < 4096) data += chunk })
    socket.on('end', () => {
      const match = /"pid"\s*:\s*(\d+)/.exec(data)
      finish({ state: 'answering', pid: match?.[1] === undefined ? undefined : Number(match[1]) })
    })
    socket.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer)
      socket.destroy()
      if (err.code === 'ENOENT') resolve({ state: 'absent' })
      else if (err.code === 'ECONNREFUSED') resolve({ state: 'stale' })
      else if (data !== '') resolve({ state: 'answering' })
      else reject(err)
    })
  })
}

/** What a route gets: its request and response, the parsed URL, and a signal aborted when the client goes. */
interface RouteContext {
  req: IncomingMessage
  res: ServerResponse
  url: URL
  api: AgentApi
  /** Aborted when the client disconnects before we answered: long calls (publish, verify, sync) stop. */
  signal: AbortSignal
  options: ControlServerOptions
  log: Logger
}

/** Answers one endpoint; anything it throws becomes the HTTP error answer (httpStatusOf, errorBody). */
type Route = (ctx: RouteContext) => Promise<void>

/** For the calls that change something and return nothing: `{ok: true}` once the call has returned. */
async function acknowledged (res: ServerResponse, call: Promise<void>): Promise<void> {
  await call
  sendJson(res, 200, { ok: true })
}

async function publishRoute ({ req, res, api, signal }: RouteContext): Promise<void> {
  const body = await readJsonBody(req)
  const request = { tree: str(body, 'tree'), source: absPath(body, 'source'), label: optStr(body, 'label'), strict: body.strict === true, force: body.force === true }
  sendJson(res, 200, await api.publish(request, signal))
}

async function subscribeRoute ({ req, res, api }: RouteContext): Promise<void> {
  const body = await readJsonBody(req)
  const seed = body.seed === undefined || body.seed === null ? undefined : absPath(body, 'seed')
  const maxDropPercent = body.maxDropPercent
  if (maxDropPercent !== undefined && maxDropPercent !== null && (typeof maxDropPercent !== 'number' || !(maxDropPercent >= 0 && maxDropPercent <= 100))) throw new BadRequestError('maxDropPercent: expected a number from 0 to 100')
  // the patterns themselves are checked by the agent (FilterPatternError, 400)
  // commands and their deadlines are checked by the agent (CommandLineError, RangeError: 400)
  const hooks = { gate: optStrArray(body, 'gate'), gateTimeoutMs: optSeq(body, 'gateTimeoutMs'), onVersion: optStrArray(body, 'onVersion'), onVersionTimeoutMs: optSeq(body, 'onVersionTimeoutMs') }
  await api.subscribe({ tree: str(body, 'tree'), to: absPath(body, 'to'), include: optStrArray(body, 'include'), exclude: optStrArray(body, 'exclude'), seed, seedCopy: optBool(body, 'seedCopy'), allowEmpty: optBool(body, 'allowEmpty'), maxDropPercent: maxDropPercent ?? undefined, ...hooks })
  sendJson(res, 200, { ok: true })
}

async function limitRoute ({ req, res, api }: RouteContext): Promise<void> {
  const body = await readJsonBody(req)
  const reset = body.reset
  if (reset !== undefined && typeof reset !== 'boolean') throw new BadRequestError('reset: expected true or false')
  sendJson(res, 200, await api.setLimit({ link: optStr(body, 'link'), peer: optStr(body, 'peer'), up: optStr(body, 'up'), down: optStr(body, 'down'), reset }))
}

async function weightRoute ({ req, res, api }: RouteContext): Promise<void> {
  const body = await readJsonBody(req)
  const weight = body.weight
  if (weight !== undefined && weight !== null && typeof weight !== 'number') throw new BadRequestError('weight: expected a number or null')
  sendJson(res, 200, { weight: await api.setTreeWeight(str(body, 'tree'), weight ?? undefined) })
}

async function shutdownRoute ({ req, res, api, options, log }: RouteContext): Promise<void> {
  await readJsonBody(req, true)
  // Stopping closes this server and its connections: let the answer reach the socket first.
  const sent = new Promise<void>((resolve) => { res.once('finish', resolve); res.once('close', resolve) })
  sendJson(res, 202, { ok: true })
  await sent
  log.info('shutdown requested over the control API')
  if (options.onShutdown !== undefined) options.onShutdown()
  else await api.shutdown()
}

/** Every endpoint, by `METHOD /path` (the table at the top of this file says what each takes and answers). */
const ROUTES = new Map<string, Route>([
  ['GET /v1/ping', async ({ res }) => { sendJson(res, 200, { pid: process.pid }) }],
  ['GET /v1/status', async ({ res, api }) => { sendJson(res, 200, await api.status()) }],
  ['GET /v1/sync', async ({ res, url, api, signal, log }) => { await streamSync(res, api, requiredParam(url, 'tree'), optSeqParam(url, 'minSeq'), signal, log) }],
  ['GET /v1/diff', async ({ res, url, api, signal, log }) => { await streamDiff(res, api, { tree: requiredParam(url, 'tree'), from: optSeqParam(url, 'from'), to: optSeqParam(url, 'to') }, signal, log) }],
  ['GET /v1/events', async ({ res, url, api, signal }) => { await streamEvents(res, api, url.searchParams.get('tree') ?? undefined, signal) }],
  ['POST /v1/accept', async ({ req, res, api }) => { const body = await readJsonBody(req); sendJson(res, 200, await api.accept(str(body, 'tree'), optSeq(body, 'seq') ?? missing('seq'))) }],
  ['POST /v1/publish', publishRoute],
  ['POST /v1/subscribe', subscribeRoute],
  ['POST /v1/unsubscribe', async ({ req, res, api }) => { const body = await readJsonBody(req); await acknowledged(res, api.unsubscribe(str(body, 'tree'))) }],
  ['POST /v1/peers', async ({ req, res, api }) => { const body = await readJsonBody(req); await acknowledged(res, api.addPeer(str(body, 'addr'), optStr(body, 'name'))) }],
  ['POST /v1/peers/remove', async ({ req, res, api }) => { const body = await readJsonBody(req); sendJson(res, 200, await api.removePeer(str(body, 'peer'))) }],
  ['POST /v1/trust', async ({ req, res, api }) => { const body = await readJsonBody(req); await acknowledged(res, api.trust(str(body, 'tree'), str(body, 'publisherKey'))) }],
  ['POST /v1/limit', limitRoute],
  ['POST /v1/weight', weightRoute],
  ['POST /v1/verify', async ({ req, res, api, signal }) => { const body = await readJsonBody(req); sendJson(res, 200, await api.verify(str(body, 'tree'), { seq: optSeq(body, 'seq'), repair: body.repair === true }, signal)) }],
  ['POST /v1/shutdown', shutdownRoute],
])

async function handle (req: IncomingMessage, res: ServerResponse, options: ControlServerOptions, log: Logger): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://localhost')
  const route = `${req.method ?? ''} ${url.pathname}`
  const gone = new AbortController()
  res.on('close', () => { if (!res.writableFinished) gone.abort(abortError('control client disconnected')) })
  log.debug({ route }, 'control request')
  try {
    const answer = ROUTES.get(route)
    if (answer === undefined) throw new UnknownEndpointError(req.method ?? '', url.pathname)
    await answer({ req, res, url, api: options.api, signal: gone.signal, options, log })
  } catch (err) {
    const status = httpStatusOf(err)
    if (status >= 500) log.error({ err, route }, 'control request failed')
    else log.debug({ err, route, status }, 'control request refused')
    if (res.headersSent || res.destroyed) return
    // A body we refused is not read to its end: close the connection rather than drain it.
    if (status === 413) res.setHeader('Connection', 'close')
    sendJson(res, status, { error: errorBody(err) })
  }
}

async function streamSync (res: ServerResponse, api: AgentApi, tree: string, minSeq: number | undefined, signal: AbortSignal, log: Logger): Promise<void> {
  res.writeHead(200, { 'Content-Type': 'application/x-ndjson', 'Cache-Control': 'no-store' })
  res.flushHeaders()
  // Progress comes once per chunk stored (thousands a second on small files): send at most one line per
  // PROGRESS_LINE_MS, the latest, plus every phase change at once; while the socket is backed up keep only
  // the latest too. (Per chunk, the JSON and the socket write cost the agent more than storing the chunk.)
  let pending: SyncProgress | undefined
  let blocked = false
  let lastPhase: string | undefined
  let timer: NodeJS.Timeout | undefined
  const send = (): void => {
    if (pending === undefined || blocked || res.destroyed) return
    lastPhase = pending.phase
    blocked = !res.write(line({ type: 'progress', progress: pending }))
    pending = undefined
    timer = setTimeout(() => { timer = undefined; send() }, PROGRESS_LINE_MS)
  }
  res.on('drain', () => { blocked = false; if (timer === undefined) send() })
  const onProgress = (progress: SyncProgress): void => {
    if (res.destroyed) return
    pending = progress
    if (timer === undefined || progress.phase !== lastPhase) { clearTimeout(timer); timer = undefined; send() }
  }
  try {
    const result = await api.waitForSync(tree, { signal, onProgress, minSeq })
    clearTimeout(timer)
    // the latest progress (100 %) is not lost to the throttle
    if (pending !== undefined && !res.destroyed) res.write(line({ type: 'progress', progress: pending }))
    res.end(line({ type: 'done', result }))
  } catch (err) {
    clearTimeout(timer)
    if (signal.aborted) { log.debug({ tree }, 'sync waiter went away'); return }
    res.end(line({ type: 'error', error: errorBody(err) }))
  }
}

function missing (key: string): never { throw new BadRequestError(`${key}: required`) }

function sendJson (res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body)
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) })
  res.end(text)
}

function abortError (message: string): Error {
  const err = new Error(message)
  err.name = 'AbortError'
  return err
}

/** Reads at most MAX_CONTROL_BODY_BYTES and parses a JSON object; an empty body is `{}` when allowed. */
async function readJsonBody (req: IncomingMessage, allowEmpty = false): Promise<Record<string, unknown>> {
  const declared = Number(req.headers['content-length'] ?? 0)
  if (declared > MAX_CONTROL_BODY_BYTES) throw new RequestTooLargeError(MAX_CONTROL_BODY_BYTES)
  const parts: Buffer[] = []
  let size = 0
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.byteLength
    if (size > MAX_CONTROL_BODY_BYTES) throw new RequestTooLargeError(MAX_CONTROL_BODY_BYTES)
    parts.push(chunk)
  }
  const text = Buffer.concat(parts).toString('utf8')
  if (text.trim() === '') {
    if (allowEmpty) return {}
    throw new BadRequestError('request body must be a JSON object, got an empty body')
  }
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (err) {
    throw new BadRequestError(`request body is not valid JSON: ${(err as Error).message}`)
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new BadRequestError('request body must be a JSON object')
  return value as Record<string, unknown>
}

// Field validators: the request is `unknown` until each field has the type the api expects.

function str (body: Record<string, unknown>, key: string): string {
  const v = body[key]
  if (typeof v !== 'string' || v === '') throw new BadRequestError(`${key}: expected a non-empty string`)
  return v
}

function optStr (body: Record<string, unknown>, key: string): string | undefined {
  const v = body[key]
  if (v === undefined || v === null) return undefined
  if (typeof v !== 'string') throw new BadRequestError(`${key}: expected a string`)
  return v
}

function absPath (body: Record<string, unknown>, key: string): string {
  const v = str(body, key)
  if (!v.startsWith('/')) throw new BadRequestError(`${key}: expected an absolute path (the agent does not share the client's working directory)`)
  return v
}

function optBool (body: Record<string, unknown>, key: string): boolean | undefined {
  const v = body[key]
  if (v === undefined || v === null) return undefined
  if (typeof v !== 'boolean') throw new BadRequestError(`${key}: expected true or false`)
  return v
}

function optStrArray (body: Record<string, unknown>, key: string): string[] | undefined {
  const v = body[key]
  if (v === undefined || v === null) return undefined
  if (!Array.isArray(v) || !v.every(x => typeof x === 'string')) throw new BadRequestError(`${key}: expected an array of strings`)
  return v as string[]
}

function optSeq (body: Record<string, unknown>, key: string): number | undefined {
  const v = body[key]
  if (v === undefined || v === null) return undefined
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new BadRequestError(`${key}: expected a non-negative integer`)
  return v
}

function optSeqParam (url: URL, key: string): number | undefined {
  const v = url.searchParams.get(key)
  if (v === null) return undefined
  if (!/^\d{1,15}$/.test(v)) throw new BadRequestError(`${key}: expected a non-negative integer`)
  return Number(v)
}

function requiredParam (url: URL, key: string): string {
  const v = url.searchParams.get(key)
  if (v === null || v === '') throw new BadRequestError(`query parameter ${key} is required`)
  return v
}
