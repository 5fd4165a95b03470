// Everything an operator watches, wired in one place so the agent's own wiring gains one call: traffic
// sampling, the status gossip and the network view, Prometheus metrics, and the dashboard listener.
import { hostname } from 'node:os'
import type { AgentStatus, PeerStatus, SyncResult } from '../api/api.js'
import type { AgentEvent } from '../api/events.js'
import type { Logger } from '../core/log.js'
import { AgentMetrics } from '../metrics/metrics.js'
import { buildSnapshot, type DashboardSnapshot } from '../dashboard/snapshot.js'
import { startDashboardServer, type DashboardServer } from '../dashboard/server.js'
import { linksOf, localSiteStatus, type LinkView } from '../netview/local-status.js'
import { NetworkView, reachesOthers, type SiteView } from '../netview/network-view.js'
import { HEARTBEAT_INTERVALS, StatusGossip } from '../netview/status-gossip.js'
import { TrafficSampler } from '../netview/traffic.js'
import type { SiteStatus } from '../../protocol/site-status.js'
import type { FileFactsSource } from '../mirrors/file-facts.js'
import { startMirrorsServer, type MirrorsServer } from '../mirrors/server.js'

/** Counters are sampled this often for rates and the throughput plot. */
export const SAMPLE_INTERVAL_MS = 1_000
/**
 * A site is stale when neither news nor its heartbeat came for a heartbeat (status-gossip.ts) and this many
 * intervals more, plus a grace for a busy sender (its status() reads the database) and for gossip relayed
 * over one more hop.
 */
export const STALE_AFTER_INTERVALS = 2
export const STALE_GRACE_MS = 2_000
/** The mirrors listener answers from a network view at most this old. */
export const VIEW_CACHE_MS = 1_000

export interface OperationsComponents {
  selfId: string
  log: Logger
  status: () => Promise<AgentStatus>
  /** Cheap (no database): the per-peer counters, sampled every second. */
  peers: () => PeerStatus[]
  configuredPeers: () => ReadonlyMap<string, string | undefined>
  connectedPeers: () => ReadonlySet<string>
  publishStatus: (bytes: Uint8Array) => Promise<number>
  /** The latest events (the dashboard's live feed). */
  recentEvents?: () => AgentEvent[]
  /** What the metalinks say of files (the mirrors listener runs only with [mirrors] listen). */
  facts?: FileFactsSource
}

export interface OperationsInit {
  /** Site name in the status gossip; default: the host name. */
  siteName?: string
  statusIntervalMs: number
  dashboard: { enabled: boolean, listen: string, allowedHosts?: string[] }
  /** The public metalink listener; off without `listen`. */
  mirrors?: { listen?: string, requestsPerSecond: number }
  /** Names the metalinks' generator. */
  agentVersion?: string
}

export interface Operations {
  /** http://…/ of the dashboard (undefined when disabled). */
  dashboardUrl?: string
  /** http://…/ of the mirrors listener (undefined unless [mirrors] listen is set). */
  mirrorsUrl?: string
  /** A status from the status topic; origin is the signer (undefined: unsigned, ignored). */
  onStatus: (bytes: Uint8Array, origin: string | undefined) => void
  onChunkReceived: (tree: string, bytes: number) => void
  onSyncEnded: (tree: string, outcome: { result: SyncResult } | { error: Error }) => void
  snapshot: () => Promise<DashboardSnapshot>
  /** The sites whose last status says they cannot serve `tree`@`seq` completely (its source changed since they published it). */
  cannotServe: (tree: string, seq: number) => string[]
  /** Whether a site, by the gossiped statuses, is connected to some site other than this one. */
  canOwn: (peerId: string) => boolean
  /** Bytes of the last status this site gossiped. */
  lastStatusBytes: () => number
  stop: () => Promise<void>
}

export async function startOperations (c: OperationsComponents, init: OperationsInit): Promise<Operations> {
  const name = init.siteName ?? hostname()
  const staleAfterMs = init.statusIntervalMs * (HEARTBEAT_INTERVALS + STALE_AFTER_INTERVALS) + STALE_GRACE_MS
  const sampler = new TrafficSampler()
  const metrics = new AgentMetrics()
  const view = new NetworkView({ selfId: c.selfId, configuredPeers: c.configuredPeers, connectedPeers: c.connectedPeers }, { staleAfterMs })

  const current = async (): Promise<{ status: AgentStatus, links: LinkView[], sites: SiteView[] }> => {
    const status = await c.status()
    const links = linksOf(status)
    const sites = view.sites(localSiteStatus(status, name, links, sampler), sampler.history())
    return { status, links, sites }
  }
  const warned = { unsentServes: false }
  const gossip = new StatusGossip({
    view,
    log: c.log,
    localStatus: async () => warnOfUnsentServes(c.log, await c.status(), status => localSiteStatus(status, name, linksOf(status), sampler), warned),
    publish: c.publishStatus,
    onResult: result => { if (result !== 'self') metrics.statusMessage(result) },
  }, { intervalMs: init.statusIntervalMs })

  sampler.sample(c.peers())
  const sampling = setInterval(() => { sampler.sample(c.peers()) }, SAMPLE_INTERVAL_MS)
  sampling.unref()
  gossip.start()

  const snapshot = async (): Promise<DashboardSnapshot> => {
    const { status, links, sites } = await current()
    return buildSnapshot({ status, sites, links, peerRates: id => sampler.rates(id), localHistory: sampler.history(), staleAfterMs, events: c.recentEvents?.() })
  }

  let server: DashboardServer | undefined
  let mirrors: MirrorsServer | undefined
  const stopAll = async (): Promise<void> => {
    clearInterval(sampling)
    gossip.stop()
    await server?.close()
    await mirrors?.close()
  }
  try {
    mirrors = await startMirrors(c, init, async () => (await current()).sites)
  } catch (err) {
    await stopAll()
    throw err
  }
  if (init.dashboard.enabled) {
    try {
      server = await startDashboardServer({
        log: c.log,
        snapshot,
        metrics: async () => {
          const { status, links, sites } = await current()
          metrics.setSnapshot({ status, siteName: name, links, sites, peerRates: id => sampler.rates(id) })
          return { contentType: metrics.contentType, body: await metrics.registry.metrics() }
        },
      }, { listen: init.dashboard.listen, allowedHosts: init.dashboard.allowedHosts })
    } catch (err) {
      await stopAll()
      throw err
    }
    c.log.info({ url: server.url }, `dashboard at ${server.url}`)
  }

  return {
    dashboardUrl: server?.url,
    mirrorsUrl: mirrors?.url,
    onStatus: (bytes, origin) => { gossip.receive(bytes, origin) },
    onChunkReceived: (tree, bytes) => { metrics.chunkReceived(tree, bytes) },
    onSyncEnded: (tree, outcome) => { metrics.syncEnded(tree, outcome) },
    snapshot,
    cannotServe: (tree, seq) => view.reports(s => s.trees.some(t => t.name === tree && t.unservableSeq === seq)),
    canOwn: (peerId) => reachesOthers(view, peerId, c.selfId),
    lastStatusBytes: () => gossip.lastSentBytes,
    stop: stopAll,
  }
}

/** The public metalink listener, when [mirrors] listen is set: answers from the network view's sites. */
async function startMirrors (c: OperationsComponents, init: OperationsInit, sites: () => Promise<SiteView[]>): Promise<MirrorsServer | undefined> {
  if (init.mirrors?.listen === undefined || c.facts === undefined) return undefined
  // the view changes at the gossip's pace: one read of it per second serves every request of that second
  let cached: { atMs: number, sites: Promise<SiteView[]> } | undefined
  const recent = async (): Promise<SiteView[]> => {
    if (cached === undefined || Date.now() - cached.atMs > VIEW_CACHE_MS) cached = { atMs: Date.now(), sites: sites() }
    return await cached.sites.catch((err: unknown) => { cached = undefined; throw err })
  }
  const server = await startMirrorsServer({
    log: c.log,
    facts: c.facts,
    sites: async () => (await recent()).map(s => ({ name: s.name, fresh: s.state === 'ok', status: s.status })),
    generator: `deltamesh/${init.agentVersion ?? ''}`,
  }, { listen: init.mirrors.listen, requestsPerSecond: init.mirrors.requestsPerSecond })
  c.log.info({ url: server.url }, `metalinks and mirrorlists at ${server.url}`)
  return server
}

/** [[serve]] entries that do not fit one status message are not gossiped: said once, not silently. */
function warnOfUnsentServes (log: Logger, status: AgentStatus, build: (status: AgentStatus) => SiteStatus, warned: { unsentServes: boolean }): SiteStatus {
  const local = build(status)
  const sent = local.serves?.length ?? 0
  const listed = status.trees.reduce((n, t) => n + (t.serves ?? []).filter(v => v.listed).length, 0)
  if (sent >= listed || warned.unsentServes) return local
  warned.unsentServes = true
  log.warn({ listed, sent }, `only ${sent} of ${listed} [[serve]] entries fit in this site's status message; the others are not in any metalink (fewer trees or shorter URLs make room)`)
  return local
}
