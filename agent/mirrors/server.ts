// The public mirrors listener ([mirrors] listen; off by default): read-only, separate from the dashboard,
// nothing but these two endpoints, at a bounded request rate, answering in one line when it cannot.
//
//   GET /metalink?tree=T&path=P[&format=metalink4][&country=CC]   metalink 3.0 (dnf, yum) or 4 (RFC 5854)
//   GET /mirrorlist?tree=T[&country=CC]                            one base URL per line
//
// Anything else: 404 with what is answered here. A malformed query: 400 with the reason. Over the rate: 429.
// An internal failure: 500 "internal error" (the cause goes to the log, never to the client).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { DeltameshError } from '../../protocol/errors.js'
import type { Logger } from '../core/log.js'
import { parseListen } from '../dashboard/server.js'
import { answerMetalink, answerMirrorlist, type Answer, type AnswerComponents } from './answer.js'

/** A request slower than this to send its headers, or to be answered (hashing a large file), is dropped. */
export const REQUEST_TIMEOUT_MS = 30_000
/** Longest request target accepted (a tree name and a path fit with room). */
export const MAX_URL_BYTES = 4096
/** Requests being answered at once; more wait for the rate limiter's tokens only, then get 503. */
export const MAX_CONCURRENT = 16

export class MirrorsListenError extends DeltameshError {
  static override name = 'MirrorsListenError'
  constructor (readonly listen: string, options?: ErrorOptions) {
    super(`mirrors listener cannot listen on ${listen}: ${(options?.cause as Error | undefined)?.message ?? 'unknown error'} (set [mirrors] listen to a free port, or remove it)`, options)
    this.name = 'MirrorsListenError'
  }
}

export interface MirrorsServerInit {
  listen: string
  requestsPerSecond: number
  now?: () => number
}

export interface MirrorsServer { url: string, close: () => Promise<void> }

/** Tokens refill at `rate` per second up to `rate` (a burst of one second's worth). */
export class TokenBucket {
  private tokens: number
  private last: number
  constructor (private readonly rate: number, private readonly now: () => number = Date.now) {
    this.tokens = rate
    this.last = now()
  }

  take (): boolean {
    const t = this.now()
    this.tokens = Math.min(this.rate, this.tokens + (t - this.last) * this.rate / 1000)
    this.last = t
    if (this.tokens < 1) return false
    this.tokens -= 1
    return true
  }
}

const HEADERS = { 'x-content-type-options': 'nosniff', 'cache-control': 'no-store', 'access-control-allow-origin': '*' }

export async function startMirrorsServer (components: AnswerComponents & { log: Logger }, init: MirrorsServerInit): Promise<MirrorsServer> {
  const log = components.log.child({ component: 'mirrors' })
  const { host, port } = parseListen(init.listen)
  const bucket = new TokenBucket(init.requestsPerSecond, init.now)
  let busy = 0
  const send = (res: ServerResponse, a: Answer, head: boolean, extra: Record<string, string> = {}): void => {
    res.writeHead(a.status, { ...HEADERS, ...extra, 'content-type': a.contentType, 'content-length': Buffer.byteLength(a.body) })
    res.end(head ? undefined : a.body)
  }
  const line = (status: number, text: string): Answer => ({ status, contentType: 'text/plain; charset=utf-8', body: `${text}\n` })

  async function route (req: IncomingMessage, signal: AbortSignal): Promise<Answer> {
    const url = new URL(req.url ?? '/', 'http://x')
    if (url.pathname === '/metalink') return await answerMetalink(components, url.searchParams, signal)
    if (url.pathname === '/mirrorlist') return await answerMirrorlist(components, url.searchParams)
    return line(404, 'not found: this listener answers /metalink?tree=T&path=P and /mirrorlist?tree=T')
  }

  const server: Server = createServer({ requestTimeout: REQUEST_TIMEOUT_MS, headersTimeout: REQUEST_TIMEOUT_MS }, (req, res) => {
    const head = req.method === 'HEAD'
    if (req.method !== 'GET' && !head) { send(res, line(405, 'only GET and HEAD'), false, { allow: 'GET, HEAD' }); return }
    if (Buffer.byteLength(req.url ?? '') > MAX_URL_BYTES) { send(res, line(414, `request target over ${MAX_URL_BYTES} bytes`), head); return }
    if (!bucket.take()) { send(res, line(429, 'too many requests; retry in a second'), head, { 'retry-after': '1' }); return }
    if (busy >= MAX_CONCURRENT) { send(res, line(503, 'busy; retry in a second'), head, { 'retry-after': '1' }); return }
    busy++
    const controller = new AbortController()
    const timer = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS)
    res.on('close', () => controller.abort())
    route(req, controller.signal)
      .then(a => { send(res, a, head) }, (err: unknown) => {
        log.error({ err, url: req.url?.slice(0, 300) }, 'mirrors request failed')
        if (!res.headersSent) send(res, line(500, 'internal error'), head)
        else res.destroy()
      })
      .finally(() => { busy--; clearTimeout(timer) })
  })

  await new Promise<void>((resolveListen, reject) => {
    server.once('error', err => { reject(new MirrorsListenError(init.listen, { cause: err })) })
    server.listen(port, host, () => { resolveListen() })
  })
  server.on('error', err => { log.error({ err }, 'mirrors server error') })
  const bound = (server.address() as AddressInfo).port
  const wildcard = host === '0.0.0.0' || host === '::'
  const url = `http://${wildcard ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host}:${bound}/`
  return {
    url,
    close: async () => {
      await new Promise<void>(resolveClose => { server.close(() => { resolveClose() }); server.closeAllConnections() })
    },
  }
}
