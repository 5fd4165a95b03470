// This site's own row of the network view, in the same shape peers gossip (SiteStatus), so the dashboard
// renders every site alike and what a site shows of itself is exactly what it tells the others.
import { trimStatus, type SiteStatus, type StatusLink, type StatusTree } from '../../protocol/site-status.js'
import type { AgentStatus } from '../api/api.js'
import type { TrafficSampler } from './traffic.js'

export interface LinkView extends StatusLink {
  /** Peer ids on this link, when known (this site's own links). */
  peerIds?: string[]
}

function finiteOrUndefined (n: number | null): number | undefined {
  return n === null || !Number.isFinite(n) || n <= 0 ? undefined : Math.round(n)
}

/**
 * The links this site reports, from the bandwidth manager's `status.links`: the global limits (carrying
 * every peer), the named links, and the peers' own links that have a limit (every peer has a row of its
 * own in the peers view anyway).
 */
export function linksOf (status: AgentStatus): LinkView[] {
  return status.links
    .filter(l => l.kind !== 'peer' || l.limit.up !== null || l.limit.down !== null)
    .map(l => {
      const peerIds = l.kind === 'global' ? status.peers.map(p => p.peerId) : l.peers
      return {
        name: l.name, peerIds, peers: peerIds.length,
        limitUp: finiteOrUndefined(l.limit.up), limitDown: finiteOrUndefined(l.limit.down),
        rateUp: Math.max(0, l.rate.up), rateDown: Math.max(0, l.rate.down),
      }
    })
}

export function localSiteStatus (status: AgentStatus, name: string, links: LinkView[], sampler: TrafficSampler, now = Date.now()): SiteStatus {
  const total = sampler.rates()
  const trees: StatusTree[] = status.trees.map(t => ({
    name: t.name,
    currentSeq: t.currentSeq,
    newestSeq: t.newestSeq,
    held: t.versions.filter(v => v.state === 'complete').map(v => v.seq).sort((a, b) => a - b),
    unservableSeq: t.versions.filter(v => v.unservable !== undefined).reduce<number | undefined>((n, v) => n === undefined || v.seq > n ? v.seq : n, undefined),
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
    serves: status.trees.flatMap(t => (t.serves ?? []).filter(v => v.listed).map(v => ({ tree: t.name, url: v.url, location: v.location, preference: v.preference }))),
  })
}
