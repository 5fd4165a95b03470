// Prometheus metrics (/metrics on the dashboard listener). Cumulative figures that the agent already keeps
// (PeerStats counters, rejection counters) are read at scrape time from one status snapshot, so the metrics
// and `deltamesh status` can never disagree; what only happens as an event (a chunk arriving for a tree, a
// sync ending) is counted here as it happens.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import type { AgentStatus, SyncResult } from '../api/api.js'
import type { LinkView } from '../netview/local-status.js'
import type { SiteView } from '../netview/network-view.js'
import type { Rates } from '../netview/traffic.js'

/** What one scrape reads; gathered once per scrape by the caller. */
export interface MetricsSnapshot {
  status: AgentStatus
  siteName: string
  links: LinkView[]
  sites: SiteView[]
  peerRates: (peerId: string) => Rates
}

export type StatusMessageResult = 'accepted' | 'replayed' | 'invalid' | 'full'

/** Sync durations from seconds (a small delta on a LAN) to hours (a first pull of a compose over a WAN). */
const SYNC_DURATION_BUCKETS = [1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600]

export class AgentMetrics {
  readonly registry = new Registry()
  private snapshot: MetricsSnapshot | undefined
  private readonly treeBytes: Counter<'tree'>
  private readonly syncDuration: Histogram<'tree'>
  private readonly syncs: Counter<'tree' | 'outcome'>
  private readonly statusMessages: Counter<'result'>

  constructor () {
    const registers = [this.registry]
    collectDefaultMetrics({ register: this.registry })
    const read = (): MetricsSnapshot | undefined => this.snapshot
    // /metrics lists the metrics in the order they are registered here
    registerIdentityGauges(registers, read)
    registerPeerMetrics(registers, read)
    registerLinkGauges(registers, read)
    registerRejectionCounters(registers, read)
    // per tree, counted as events happen (chunkReceived, syncEnded)
    this.treeBytes = new Counter({ name: 'deltamesh_tree_chunk_received_bytes_total', help: 'Verified chunk payload bytes received for the tree since the agent started', labelNames: ['tree'], registers })
    this.syncDuration = new Histogram({ name: 'deltamesh_sync_duration_seconds', help: 'Duration of completed syncs', labelNames: ['tree'], buckets: SYNC_DURATION_BUCKETS, registers })
    this.syncs = new Counter({ name: 'deltamesh_syncs_total', help: 'Syncs ended, by outcome', labelNames: ['tree', 'outcome'], registers })
    registerTreeGauges(registers, read)
    registerNetworkGauges(registers, read)
    this.statusMessages = new Counter({ name: 'deltamesh_status_messages_total', help: 'Status gossip received, by what was done with it', labelNames: ['result'], registers })
  }

  /** Sets what the next registry.metrics() reads; call once per scrape, just before. */
  setSnapshot (snapshot: MetricsSnapshot): void { this.snapshot = snapshot }

  chunkReceived (tree: string, bytes: number): void { this.treeBytes.inc({ tree }, bytes) }

  syncEnded (tree: string, outcome: { result: SyncResult } | { error: Error }): void {
    if ('result' in outcome) {
      this.syncDuration.observe({ tree }, outcome.result.durationMs / 1000)
      this.syncs.inc({ tree, outcome: 'complete' })
    } else {
      this.syncs.inc({ tree, outcome: 'failed' })
    }
  }

  statusMessage (result: StatusMessageResult): void { this.statusMessages.inc({ result }) }

  get contentType (): string { return this.registry.contentType }
}

/** The snapshot of the scrape under way (setSnapshot), read by every collect(). */
type ReadSnapshot = () => MetricsSnapshot | undefined

/** Who this agent is and since when. */
function registerIdentityGauges (registers: Registry[], read: ReadSnapshot): void {
  new Gauge({
    name: 'deltamesh_info', help: 'Agent identity (value is always 1)', labelNames: ['version', 'peer_id', 'site'], registers,
    collect () { const s = read(); this.reset(); if (s !== undefined) this.set({ version: s.status.version, peer_id: s.status.peerId, site: s.siteName }, 1) },
  })
  new Gauge({
    name: 'deltamesh_start_time_seconds', help: 'When the agent started (unix time)', registers,
    collect () { const s = read(); if (s !== undefined) this.set(s.status.startedAtMs / 1000) },
  })
}

/** Per peer: the cumulative counters kept by PeerStats, exported as counters, and the live connection and rates. */
function registerPeerMetrics (registers: Registry[], read: ReadSnapshot): void {
  const peerCounter = (name: string, help: string, of: (p: AgentStatus['peers'][number]) => number): void => {
    new Counter({
      name, help, labelNames: ['peer', 'site'], registers,
      collect () {
        const s = read()
        this.reset()
        for (const p of s?.status.peers ?? []) this.inc({ peer: p.peerId, site: p.name ?? '' }, of(p))
      },
    })
  }
  peerCounter('deltamesh_peer_sent_bytes_total', 'Bytes of deltamesh frames sent to the peer (chunks, requests, heads; no TCP/Noise/yamux overhead)', p => p.bytesUp)
  peerCounter('deltamesh_peer_received_bytes_total', 'Bytes of deltamesh frames received from the peer', p => p.bytesDown)
  peerCounter('deltamesh_peer_chunk_sent_bytes_total', 'Chunk payload bytes served to the peer', p => p.chunkBytesUp)
  peerCounter('deltamesh_peer_chunk_received_bytes_total', 'Verified chunk payload bytes received from the peer', p => p.chunkBytesDown)
  peerCounter('deltamesh_peer_chunks_served_total', 'Chunks served to the peer', p => p.chunksUp)
  peerCounter('deltamesh_peer_chunks_fetched_total', 'Verified chunks fetched from the peer', p => p.chunksDown)
  peerCounter('deltamesh_peer_verification_failures_total', 'Chunks from the peer that did not hash to their id (never written)', p => p.badChunks)
  peerCounter('deltamesh_peer_strikes_total', 'Misbehaviour strikes counted against the peer', p => p.strikes)
  new Gauge({
    name: 'deltamesh_peer_connected', help: '1 while the peer is connected', labelNames: ['peer', 'site'], registers,
    collect () { const s = read(); this.reset(); for (const p of s?.status.peers ?? []) this.set({ peer: p.peerId, site: p.name ?? '' }, p.connected ? 1 : 0) },
  })
  new Gauge({
    name: 'deltamesh_peer_rate_bytes_per_second', help: 'Frame bytes per second to (up) and from (down) the peer, averaged over 5 s', labelNames: ['peer', 'site', 'direction'], registers,
    collect () {
      const s = read()
      this.reset()
      for (const p of s?.status.peers ?? []) {
        const r = s?.peerRates(p.peerId) ?? { up: 0, down: 0 }
        this.set({ peer: p.peerId, site: p.name ?? '', direction: 'up' }, r.up)
        this.set({ peer: p.peerId, site: p.name ?? '', direction: 'down' }, r.down)
      }
    },
  })
}

/** Per link: the bandwidth scheduler's links, or the agent-wide limits as one link. */
function registerLinkGauges (registers: Registry[], read: ReadSnapshot): void {
  new Gauge({
    name: 'deltamesh_link_limit_bytes_per_second', help: 'Configured limit of the link (+Inf = unlimited)', labelNames: ['link', 'direction'], registers,
    collect () {
      const s = read()
      this.reset()
      for (const l of s?.links ?? []) {
        this.set({ link: l.name, direction: 'up' }, l.limitUp ?? Infinity)
        this.set({ link: l.name, direction: 'down' }, l.limitDown ?? Infinity)
      }
    },
  })
  new Gauge({
    name: 'deltamesh_link_rate_bytes_per_second', help: 'Current rate of the link', labelNames: ['link', 'direction'], registers,
    collect () {
      const s = read()
      this.reset()
      for (const l of s?.links ?? []) {
        this.set({ link: l.name, direction: 'up' }, l.rateUp)
        this.set({ link: l.name, direction: 'down' }, l.rateDown)
      }
    },
  })
}

/** Agent-wide counts of rejected chunks and version announcements (status counters). */
function registerRejectionCounters (registers: Registry[], read: ReadSnapshot): void {
  new Counter({
    name: 'deltamesh_chunks_rejected_total', help: 'Chunks rejected: received with a wrong hash, or found changed on disk when served', registers,
    collect () { const s = read(); this.reset(); this.inc(s?.status.counters.chunksRejected ?? 0) },
  })
  new Counter({
    name: 'deltamesh_envelopes_rejected_total', help: 'Version announcements rejected (untrusted key, bad signature, equivocation, replay)', registers,
    collect () { const s = read(); this.reset(); this.inc(s?.status.counters.envelopesRejected ?? 0) },
  })
}

/** Per tree: versions and the running sync, from the status snapshot. */
function registerTreeGauges (registers: Registry[], read: ReadSnapshot): void {
  const treeGauge = (name: string, help: string, of: (t: AgentStatus['trees'][number]) => number | undefined): void => {
    new Gauge({
      name, help, labelNames: ['tree'], registers,
      collect () {
        const s = read()
        this.reset()
        for (const t of s?.status.trees ?? []) { const v = of(t); if (v !== undefined) this.set({ tree: t.name }, v) }
      },
    })
  }
  treeGauge('deltamesh_tree_current_seq', 'Version this site serves at its subscription path (or published)', t => t.currentSeq)
  treeGauge('deltamesh_tree_newest_seq', 'Newest version announced by a trusted publisher', t => t.newestSeq)
  treeGauge('deltamesh_tree_versions_behind', 'newest_seq - current_seq for a subscribed tree', t => t.subscribedTo === undefined || t.newestSeq === undefined ? undefined : t.newestSeq - (t.currentSeq ?? 0))
  treeGauge('deltamesh_tree_sync_bytes_planned', 'Bytes the running sync must fetch (a gauge: the plan of the version being synced; was deltamesh_tree_sync_bytes_total)', t => t.sync?.bytesTotal)
  treeGauge('deltamesh_tree_sync_bytes_done', 'Bytes the running sync has fetched', t => t.sync?.bytesDone)
}

/** The network as this agent sees it (from the site status gossip). */
function registerNetworkGauges (registers: Registry[], read: ReadSnapshot): void {
  new Gauge({
    name: 'deltamesh_network_sites', help: 'Sites known to this agent (itself included), by state', labelNames: ['state'], registers,
    collect () {
      const s = read()
      this.reset()
      for (const state of ['ok', 'stale', 'unreachable']) this.set({ state }, (s?.sites ?? []).filter(x => x.state === state).length)
    },
  })
  new Gauge({
    name: 'deltamesh_network_site_tree_current_seq', help: 'Current version of each tree at each site, as last gossiped', labelNames: ['site', 'peer', 'tree'], registers,
    collect () {
      const s = read()
      this.reset()
      for (const site of s?.sites ?? []) {
        for (const t of site.status?.trees ?? []) if (t.currentSeq !== undefined) this.set({ site: site.name, peer: site.peerId, tree: t.name }, t.currentSeq)
      }
    },
  })
}
