// The JSON the dashboard page renders: every site (from the network view), this site's trees with their
// version history, its links and peers, and the throughput series. Built per request from the live state.
import type { AgentStatus, GateRefusal, HookStats, SelectionRefusal, WatchStatus } from '../api/api.js'
import type { AgentEvent } from '../api/events.js'
import type { LinkView } from '../netview/local-status.js'
import type { SiteView } from '../netview/network-view.js'
import type { Rates, RatePoint } from '../netview/traffic.js'

export interface VersionRow {
  seq: number
  label: string
  state: string
  createdAtMs: number
  publisherKey: string
  /** Whether this site's own key signed it. */
  publishedHere: boolean
  files?: number
  /** Tree size (bytes of files). */
  bytes?: number
  /** Bytes that crossed the network for this version here (at the publisher: new chunk bytes). */
  newBytes?: number
  /** At the publisher: entries of the source not in this version, with the first few (display form). */
  skipped?: { count: number, sample: Array<{ path: string, kind: string, reason: string }> }
  /** Sites whose last status lists this version as complete. */
  heldBy: string[]
  /** At the publisher: why it cannot serve this version completely (its source changed since). */
  unservable?: string
}

export interface TreeRow {
  name: string
  subscribedTo?: string
  include?: string[]
  exclude?: string[]
  currentSeq?: number
  newestSeq?: number
  versions: VersionRow[]
  /** A version not installed because of what the filter selects (the served one stays), with the reason. */
  refused?: SelectionRefusal
  /** The last sync of the tree here failed (and is retried, or waits for a change): why. */
  syncError?: string
  /** A newer version the subscription's gate refused (held, not served), with the command's last lines. */
  gateRefused?: GateRefusal
  hooks?: HookStats
  /** Why the tree waits and cannot move by itself (a refused version, chunks no peer holds), in words. */
  stuck?: string
}

export interface PeerRow {
  peerId: string
  name: string
  connected: boolean
  rateUp: number
  rateDown: number
  bytesUp: number
  bytesDown: number
  chunkBytesUp: number
  chunkBytesDown: number
  badChunks: number
  strikes: number
}

export interface DashboardSnapshot {
  generatedAtMs: number
  self: { peerId: string, name: string, version: string, startedAtMs: number, multiaddrs: string[], publisherKey: string }
  staleAfterMs: number
  sites: SiteView[]
  /** Every tree any site reports, sorted. */
  treeNames: string[]
  trees: TreeRow[]
  links: Array<LinkView & { peerNames: string[] }>
  peers: PeerRow[]
  /** This site's rates, one point per second (other sites' points are in sites[].rateHistory). */
  throughput: RatePoint[]
  /** The live feed: this agent's latest events, newest last (`deltamesh events` shows the same). */
  events: AgentEvent[]
  /** [[publish]] sources this site publishes on change. */
  watches: WatchStatus[]
}

export interface SnapshotInput {
  status: AgentStatus
  sites: SiteView[]
  links: LinkView[]
  peerRates: (peerId: string) => Rates
  localHistory: RatePoint[]
  staleAfterMs: number
  events?: AgentEvent[]
  now?: number
}

export function buildSnapshot (input: SnapshotInput): DashboardSnapshot {
  const { status, sites } = input
  const self = sites.find(s => s.self)
  const nameOf = new Map(sites.map(s => [s.peerId, s.name]))
  const treeNames = [...new Set(sites.flatMap(s => s.status?.trees.map(t => t.name) ?? []))].sort()
  const heldBy = (tree: string, seq: number): string[] => sites
    .filter(s => s.status?.trees.some(t => t.name === tree && (t.held.includes(seq) || t.currentSeq === seq)) === true)
    .map(s => s.name)
  return {
    generatedAtMs: input.now ?? Date.now(),
    self: { peerId: status.peerId, name: self?.name ?? '', version: status.version, startedAtMs: status.startedAtMs, multiaddrs: status.multiaddrs, publisherKey: status.publisherKey },
    staleAfterMs: input.staleAfterMs,
    sites,
    treeNames,
    trees: status.trees.map(t => ({
      name: t.name, subscribedTo: t.subscribedTo, include: t.include, exclude: t.exclude, currentSeq: t.currentSeq, newestSeq: t.newestSeq,
      refused: t.refused, syncError: t.sync?.phase === 'failed' ? t.sync.error : undefined, gateRefused: t.gateRefused, hooks: t.hooks, stuck: t.stuck?.message,
      versions: t.versions.map(v => ({
        seq: v.seq, label: v.label, state: v.state, createdAtMs: v.createdAtMs, publisherKey: v.publisherKey,
        publishedHere: v.publisherKey === status.publisherKey, files: v.files, bytes: v.bytes, newBytes: v.newBytes, skipped: v.skipped, heldBy: heldBy(t.name, v.seq), unservable: v.unservable?.message,
      })).reverse(),
    })),
    links: input.links.map(l => ({ ...l, peerNames: (l.peerIds ?? []).map(id => nameOf.get(id) ?? id.slice(-8)) })),
    peers: status.peers.map(p => {
      const r = input.peerRates(p.peerId)
      return {
        peerId: p.peerId, name: nameOf.get(p.peerId) ?? p.name ?? p.peerId.slice(-8), connected: p.connected, rateUp: r.up, rateDown: r.down,
        bytesUp: p.bytesUp, bytesDown: p.bytesDown, chunkBytesUp: p.chunkBytesUp, chunkBytesDown: p.chunkBytesDown, badChunks: p.badChunks, strikes: p.strikes,
      }
    }),
    throughput: input.localHistory,
    events: input.events ?? [],
    watches: status.watches ?? [],
  }
}
