// This site's own row of the network view, in the same shape peers gossip (SiteStatus), so the dashboard
// renders every site alike and what a site shows of itself is exactly what it tells the others.
import { trimStatus, type SiteStatus, type StatusLink, type StatusTree } from '../../protocol/site-status.js'
import type { AgentStatus } from '../daemon/api.js'
import type { TrafficSampler } from './traffic.js'

/**
 * A link as the bandwidth scheduler reports it in `status.links`: a named group of peers behind one WAN
 * link, its limits (bytes/s; null = unlimited) and current rates. Agents without per-link limits have none.
 */
export interface LinkStatusLike {
  name: string
  peers: string[]
  limitUp: number | null
  limitDown: number | null
  rateUp: number
  rateDown: number
}

export interface LinkView extends StatusLink {
  /** Peer ids on this link, when known (this site's own links). */
  peerIds?: string[]
}

/** The agent-wide [limits] seen as one link that carries every peer. */
export interface AgentLimits { up: number, down: number }

function finiteOrUndefined (n: number | null): number | undefined {
  return n === null || !Number.isFinite(n) || n <= 0 ? undefined : Math.round(n)
}

/**
 * The links this site reports: the scheduler's per-link figures when the status has them; otherwise the
 * agent-wide limits as one link "all peers" with the measured total rates.
 */
export function linksOf (status: AgentStatus & { links?: LinkStatusLike[] }, limits: AgentLimits, sampler: TrafficSampler): LinkView[] {
  if (Array.isArray(status.links) && status.links.length > 0) {
    return status.links.map(l => ({
      name: l.name, peerIds: l.peers, peers: l.peers.length,
      limitUp: finiteOrUndefined(l.limitUp), limitDown: finiteOrUndefined(l.limitDown),
      rateUp: Math.max(0, l.rateUp), rateDown: Math.max(0, l.rateDown),
    }))
  }
  const total = sampler.rates()
  return [{
    name: 'all peers', peers: status.peers.length, peerIds: status.peers.map(p => p.peerId),
    limitUp: finiteOrUndefined(limits.up), limitDown: finiteOrUndefined(limits.down), rateUp: total.up, rateDown: total.down,
  }]
}

export function localSiteStatus (status: AgentStatus, name: string, links: LinkView[], sampler: TrafficSampler, now = Date.now()): SiteStatus {
  const total = sampler.rates()
  const trees: StatusTree[] = status.trees.map(t => ({
    name: t.name,
    currentSeq: t.currentSeq,
    newestSeq: t.newestSeq,
    held: t.versions.filter(v => v.state === 'complete').map(v => v.seq).sort((a, b) => a - b),
    sync: t.sync === undefined
      ? undefined
      : { seq: t.sync.seq, phase: t.sync.phase, bytesDone: Math.min(t.sync.bytesDone, t.sync.bytesTotal), bytesTotal: t.sync.bytesTotal, rateBps: t.sync.rateBps, startedAtMs: t.sync.startedAtMs },
  }))
  return trimStatus({
    sentAtMs: now,
    name,
    agentVersion: status.version,
    startedAtMs: status.startedAtMs,
    totals: { bytesUp: status.counters.bytesUp, bytesDown: status.counters.bytesDown, rateUp: total.up, rateDown: total.down },
    trees,
    peers: status.peers.map(p => { const r = sampler.rates(p.peerId); return { peerId: p.peerId, connected: p.connected, rateUp: r.up, rateDown: r.down } }),
    links: links.map(({ peerIds: _ignored, ...l }) => l),
  })
}
