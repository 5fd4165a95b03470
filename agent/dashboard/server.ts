// The dashboard's HTTP listener (127.0.0.1 by default): the page and its two static assets, the network
// snapshot as JSON and as server-sent events, and Prometheus /metrics. Read-only: nothing here changes the
// agent, so it needs no authentication beyond where it listens.
//
//   GET /                 index.html
//   GET /app.js, /app.css
//   GET /api/snapshot     DashboardSnapshot (JSON)
//   GET /api/events       text/event-stream: a `snapshot` event every SSE_INTERVAL_MS
//   GET /metrics          Prometheus text format
import { readFile } from 'node:fs/promises'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { dirname, join, resolve, sep } from 'node:path'
import { fileURLToPath } from 'node:url'
import { DeltameshError } from '../../protocol/errors.js'
import type { Logger } from '../core/log.js'
import type { DashboardSnapshot } from './snapshot.js'

/** How often an open page gets a fresh snapshot. */
export const SSE_INTERVAL_MS = 1_000
/** Open event streams at most: a few operators' tabs; each costs one status() per second. */
export const MAX_SSE_CLIENTS = 32
/** Requests are GETs without a body; anything slower than this to send its headers is dropped. */
export const REQUEST_TIMEOUT_MS = 10_000

/** The dashboard could not listen where the config says. */
export class DashboardListenError extends DeltameshError {
  static override name = 'DashboardListenError'
  constructor (readonly listen: string, options?: ErrorOptions) {
    super(`dashboard cannot listen on ${listen}: ${(options?.cause as Error | undefined)?.message ?? 'unknown error'} (set [dashboard] listen to a free port, or enabled = false)`, options)
    this.name = 'DashboardListenError'
  }
}

export interface DashboardServerComponents {
  log: Logger
  snapshot: () => Promise<DashboardSnapshot>
  metrics: () => Promise<{ contentType: string, body: string }>
}

export interface DashboardServerInit {
  /** "HOST:PORT"; HOST is an IP literal ([…] for IPv6) or localhost; port 0 picks a free one. */
  listen: string
  /**
   * Host headers answered besides the loopback names (localhost, 127.0.0.1, [::1]) on any port, which cover
   * ssh tunnels and local port forwards: "name" (any port) or "name:port", e.g. a reverse proxy's name.
   */
  allowedHosts?: string[]
}

export interface DashboardServer {
  /** http://HOST:PORT/ with the port actually bound. */
  url: string
  close: () => Promise<void>
}

const ASSETS = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/app.js': { file: 'app.js', type: 'text/javascript; charset=utf-8' },
  '/app.css': { file: 'app.css', type: 'text/css; charset=utf-8' },
} as const

// Everything the page loads comes from this listener: no CDN, no fonts, nothing from the internet.
const SECURITY_HEADERS = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store',
}

/** The static files live next to the TypeScript source (no build step); from dist/ that is ../../../agent/dashboard/static. */
export function staticDir (): string {
  const here = fileURLToPath(import.meta.url)
  const marker = `${sep}dist${sep}agent${sep}`
  if (here.includes(marker)) return join(here.slice(0, here.indexOf(marker)), 'agent', 'dashboard', 'static')
  return resolve(dirname(here), 'static')
}

export function parseListen (listen: string): { host: string, port: number } {
  const m = /^(\[[0-9a-fA-F:.]+\]|[0-9.]+|localhost):(\d{1,5})$/.exec(listen)
  const port = Number(m?.[2])
  if (m === null || port > 65535) throw new DashboardListenError(listen, { cause: new Error('expected HOST:PORT, e.g. 127.0.0.1:7180') })
  return { host: (m[1] as string).replace(/^\[|\]$/g, ''), port }
}

export async function startDashboardServer (components: DashboardServerComponents, init: DashboardServerInit): Promise<DashboardServer> {
  const log = components.log.child({ component: 'dashboard' })
  const { host, port } = parseListen(init.listen)
  const assets = new Map<string, { body: Buffer, type: string }>()
  for (const [path, a] of Object.entries(ASSETS)) assets.set(path, { body: await readFile(join(staticDir(), a.file)), type: a.type })

  const streams = new Set<ServerResponse>()
  let checkHost: (host: string) => boolean = () => true
  const server: Server = createServer({ requestTimeout: REQUEST_TIMEOUT_MS }, (req, res) => {
    handle(req, res).catch((err: unknown) => {
      log.error({ err, url: req.url }, 'dashboard request failed')
      if (!res.headersSent) { res.writeHead(500, { 'content-type': 'text/plain' }); res.end('internal error\n') } else res.destroy()
    })
  })

  async function handle (req: IncomingMessage, res: ServerResponse): Promise<void> {
    // A page on another site could point a DNS name at 127.0.0.1 and read our pages (DNS rebinding): only
    // answer requests addressed to the names we listen on.
    const requested = (req.headers.host ?? '').toLowerCase()
    if (!checkHost(requested)) {
      return send(res, 421, 'text/plain', `misdirected request: this dashboard answers to the loopback names (localhost, 127.0.0.1, [::1]) on any port, its listen address ${init.listen}${(init.allowedHosts ?? []).length > 0 ? ` and ${(init.allowedHosts ?? []).join(', ')}` : ''}, not to Host ${JSON.stringify(requested.slice(0, 100))}; a reverse proxy's name goes in [dashboard] allowedHosts in config.toml\n`)
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, 'text/plain', 'only GET\n', { allow: 'GET, HEAD' })
    const path = new URL(req.url ?? '/', 'http://x').pathname
    const asset = assets.get(path === '/index.html' ? '/' : path)
    if (asset !== undefined) return send(res, 200, asset.type, asset.body)
    if (path === '/api/snapshot') return send(res, 200, 'application/json', JSON.stringify(await components.snapshot()))
    if (path === '/metrics') {
      const m = await components.metrics()
      return send(res, 200, m.contentType, m.body)
    }
    if (path === '/api/events') return openStream(req, res)
    return send(res, 404, 'text/plain', 'not found\n')
  }

  function openStream (req: IncomingMessage, res: ServerResponse): void {
    if (streams.size >= MAX_SSE_CLIENTS) return send(res, 503, 'text/plain', 'too many open dashboards\n', { 'retry-after': '5' })
    res.writeHead(200, { ...SECURITY_HEADERS, 'content-type': 'text/event-stream', connection: 'keep-alive' })
    res.write(`retry: ${SSE_INTERVAL_MS * 2}\n\n`)
    streams.add(res)
    let busy = false
    const push = (): void => {
      // a slow reader or a slow status() skips ticks instead of queueing them
      if (busy || res.writableNeedDrain) return
      busy = true
      components.snapshot()
        .then(s => { res.write(`event: snapshot\ndata: ${JSON.stringify(s)}\n\n`) })
        .catch((err: unknown) => { log.warn({ err }, 'snapshot failed') })
        .finally(() => { busy = false })
    }
    const timer = setInterval(push, SSE_INTERVAL_MS)
    push()
    req.socket.setTimeout(0)
    res.on('close', () => { clearInterval(timer); streams.delete(res) })
  }

  await new Promise<void>((resolveListen, reject) => {
    server.once('error', err => { reject(new DashboardListenError(init.listen, { cause: err })) })
    server.listen(port, host, () => { resolveListen() })
  })
  server.on('error', err => { log.error({ err }, 'dashboard server error') })
  const bound = (server.address() as AddressInfo).port
  const urlHost = host.includes(':') ? `[${host}]` : host
  const wildcard = host === '0.0.0.0' || host === '::'
  // listening on every address is the operator's explicit choice; then any Host is allowed
  if (!wildcard) checkHost = hostCheck(`${urlHost}:${bound}`, init.allowedHosts ?? [])
  const url = `http://${wildcard ? '127.0.0.1' : urlHost}:${bound}/`

  return {
    url,
    close: async () => {
      for (const s of streams) s.destroy()
      await new Promise<void>(resolveClose => { server.close(() => { resolveClose() }); server.closeAllConnections() })
    },
  }
}

function send (res: ServerResponse, status: number, type: string, body: string | Buffer, headers: Record<string, string> = {}): void {
  res.writeHead(status, { ...SECURITY_HEADERS, 'content-type': type, 'content-length': Buffer.byteLength(body), ...headers })
  res.end(res.req.method === 'HEAD' ? undefined : body)
}

const LOOPBACK_HOST = /^(localhost|127\.0\.0\.1|\[::1\])(:\d{1,5})?$/

/**
 * Which Host headers the dashboard answers. A page on another site could point a DNS name at 127.0.0.1 and read
 * our pages (DNS rebinding), so a name must be one we chose: the loopback names on any port (a tunnel's local
 * end can be any port, and no remote page controls those names), the address we listen on, and the
 * operator's allowedHosts ("name" for any port, "name:port" for one).
 */
export function hostCheck (listenAddress: string, allowed: string[]): (host: string) => boolean {
  const exact = new Set([listenAddress.toLowerCase(), ...allowed.filter(a => a.includes(':') && !a.startsWith('[')).map(a => a.toLowerCase())])
  const anyPort = new Set(allowed.filter(a => !a.includes(':') || (a.startsWith('[') && a.endsWith(']'))).map(a => a.toLowerCase()))
  return host => {
    if (LOOPBACK_HOST.test(host) || exact.has(host)) return true
    const name = host.replace(/:\d{1,5}$/, '')
    return anyPort.has(name)
  }
}

