// What this agent knows of every site: its own status, plus the last status each peer gossiped. Which sites
// are current, stale or unreachable is decided here from local receive times (never from a peer's clock).
import { decodeSiteStatus, type SiteStatus } from '../../protocol/site-status.js'

export type SiteState = 'ok' | 'stale' | 'unreachable'

export interface SiteView {
  peerId: string
  name: string
  self: boolean
  /** Listed in this agent's config (a peer it dials); other sites are heard through the gossip mesh. */
  configured: boolean
  /** Connected to this agent directly. */
  connected: boolean
  state: SiteState
  /** Local time the last status arrived (self: now); undefined = never heard. */
  lastHeardMs?: number
  status?: SiteStatus
  /** [local receive time ms, upload bytes/s, download bytes/s] from the statuses heard. */
  rateHistory: Array<[number, number, number]>
}

export interface NetworkViewComponents {
  selfId: string
  /** Peers of the config: id → operator-given name. */
  configuredPeers: () => ReadonlyMap<string, string | undefined>
  connectedPeers: () => ReadonlySet<string>
}

export interface NetworkViewInit {
  /** A site not heard from for this long is stale (default: 3 gossip intervals). */
  staleAfterMs: number
  /** Sites heard through the mesh but not in our config; the least recently heard is dropped beyond this. */
  maxUnconfiguredSites?: number
  /** Rate points kept per site for the plot. */
  historyPoints?: number
  now?: () => number
}

/** A mesh of sites relaying each other: far above a real mirror network, small enough to render. */
export const DEFAULT_MAX_UNCONFIGURED_SITES = 64
export const DEFAULT_SITE_HISTORY_POINTS = 120

export type IngestResult = 'accepted' | 'self' | 'replayed' | 'full'

interface Heard { status: SiteStatus, receivedAtMs: number, history: Array<[number, number, number]> }

export class NetworkView {
  private readonly heard = new Map<string, Heard>()
  private readonly now: () => number
  private readonly maxUnconfigured: number
  private readonly historyPoints: number

  constructor (private readonly components: NetworkViewComponents, private readonly init: NetworkViewInit) {
    this.now = init.now ?? Date.now
    this.maxUnconfigured = init.maxUnconfiguredSites ?? DEFAULT_MAX_UNCONFIGURED_SITES
    this.historyPoints = init.historyPoints ?? DEFAULT_SITE_HISTORY_POINTS
  }

  /**
   * A status gossiped by `origin` (the gossipsub signer). Throws InvalidMessageError for bytes that do not
   * decode; a status not newer (by the sender's own clock) than the last one accepted from it is a replay
   * or arrived out of order, and is dropped.
   */
  ingest (origin: string, bytes: Uint8Array): IngestResult {
    if (origin === this.components.selfId) return 'self'
    const status = decodeSiteStatus(bytes)
    const previous = this.heard.get(origin)
    if (previous !== undefined && status.sentAtMs <= previous.status.sentAtMs) return 'replayed'
    if (previous === undefined && !this.components.configuredPeers().has(origin) && !this.makeRoomForUnconfigured()) return 'full'
    const receivedAtMs = this.now()
    const history = previous?.history ?? []
    history.push([receivedAtMs, status.totals.rateUp, status.totals.rateDown])
    if (history.length > this.historyPoints) history.splice(0, history.length - this.historyPoints)
    this.heard.set(origin, { status, receivedAtMs, history })
    return 'accepted'
  }

  /** Drops the least recently heard unconfigured site if the table of those is full; false if none can go. */
  private makeRoomForUnconfigured (): boolean {
    const configured = this.components.configuredPeers()
    const unconfigured = [...this.heard].filter(([id]) => !configured.has(id))
    if (unconfigured.length < this.maxUnconfigured) return true
    const oldest = unconfigured.sort((a, b) => a[1].receivedAtMs - b[1].receivedAtMs)[0]
    if (oldest === undefined) return false
    this.heard.delete(oldest[0])
    return true
  }

  /** The last status heard from `peerId` (however old), if any. */
  statusOf (peerId: string): SiteStatus | undefined {
    return this.heard.get(peerId)?.status
  }

  /** The names of the other sites whose last status (however old) satisfies `test`. */
  reports (test: (status: SiteStatus) => boolean): string[] {
    const configured = this.components.configuredPeers()
    return [...this.heard].filter(([, h]) => test(h.status)).map(([id, h]) => configured.get(id) ?? h.status.name)
  }

  /** Every site: this one first, then the others by name. `self` is this site's own current status. */
  sites (self: SiteStatus, selfHistory: Array<[number, number, number]> = []): SiteView[] {
    const now = this.now()
    const configured = this.components.configuredPeers()
    const connected = this.components.connectedPeers()
    // a site another site reports a live connection to (in a status that is itself fresh) is reachable
    // through the mesh, even when we cannot dial it ourselves
    const reachedBy = new Set<string>()
    for (const [, h] of this.heard) {
      if (now - h.receivedAtMs > this.init.staleAfterMs) continue
      for (const p of h.status.peers) if (p.connected) reachedBy.add(p.peerId)
    }
    const ids = new Set([...configured.keys(), ...this.heard.keys()])
    ids.delete(this.components.selfId)
    const others: SiteView[] = [...ids].map(peerId => {
      const h = this.heard.get(peerId)
      const fresh = h !== undefined && now - h.receivedAtMs <= this.init.staleAfterMs
      const isConnected = connected.has(peerId)
      const state: SiteState = fresh ? 'ok' : (isConnected || reachedBy.has(peerId)) ? 'stale' : 'unreachable'
      return {
        peerId,
        name: configured.get(peerId) ?? h?.status.name ?? peerId.slice(-8),
        self: false,
        configured: configured.has(peerId),
        connected: isConnected,
        state,
        lastHeardMs: h?.receivedAtMs,
        status: h?.status,
        rateHistory: h?.history.slice() ?? [],
      }
    })
    others.sort((a, b) => a.name.localeCompare(b.name) || a.peerId.localeCompare(b.peerId))
    return [{
      peerId: this.components.selfId, name: self.name, self: true, configured: false, connected: true, state: 'ok',
      lastHeardMs: now, status: self, rateHistory: selfHistory,
    }, ...others]
  }
}

/**
 * Whether `peerId`, by its last status, is connected to some site other than `selfId`: if not, everything it
 * fetches comes through us. (Whether that other site holds the version cannot be told in time: a version is
 * announced before the statuses that say who holds it.) No status heard from it counts as yes.
 */
export function reachesOthers (view: Pick<NetworkView, 'statusOf'>, peerId: string, selfId: string): boolean {
  const status = view.statusOf(peerId)
  if (status === undefined) return true
  return status.peers.some(p => p.connected && p.peerId !== selfId)
}
