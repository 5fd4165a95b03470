// Per-peer counters for `status` and the dashboard, plus the strike budget for misbehaving peers.
// Only allowed peers ever reach the protocols (connection gater), so the map is bounded by the allowlist.
import type { Libp2p, PeerId } from '@libp2p/interface'

export interface PeerCounters {
  /** Bytes of deltamesh frames written to / read from this peer (chunks, heads, requests; not TCP/noise/yamux overhead). */
  bytesUp: number
  bytesDown: number
  /** Chunk payload alone: what the data moved, for comparison with the bytes a version lacked. */
  chunkBytesUp: number
  chunkBytesDown: number
  chunksServed: number
  chunksReceived: number
  /** Chunks the peer said it does not have (answered DONT_HAVE). */
  dontHaves: number
  /** Blocks whose bytes did not hash to the id they were sent for. */
  badChunks: number
  strikes: number
  lastStrike?: string
  /** ms since epoch of the current connection; undefined while disconnected. */
  connectedSince?: number
}

export type MisbehaviourHandler = (peerId: string, reason: string) => void

export interface StrikeInit {
  /** Strikes after which `onBudgetExceeded` is called (the agent hangs up; the gater still admits a redial). */
  maxStrikes?: number
  onBudgetExceeded?: (peerId: string, strikes: number) => void
}

/** Borrowed from hypercore's MAX_INVALID_REQUESTS idea, scaled down: 16 bad frames or chunks and we hang up. */
export const DEFAULT_MAX_STRIKES = 16

export class PeerStats {
  private readonly peers = new Map<string, PeerCounters>()
  private readonly maxStrikes: number
  private readonly onBudgetExceeded?: (peerId: string, strikes: number) => void

  constructor (init: StrikeInit = {}) {
    this.maxStrikes = init.maxStrikes ?? DEFAULT_MAX_STRIKES
    this.onBudgetExceeded = init.onBudgetExceeded
  }

  get (peerId: string): PeerCounters {
    let c = this.peers.get(peerId)
    if (c === undefined) {
      c = { bytesUp: 0, bytesDown: 0, chunkBytesUp: 0, chunkBytesDown: 0, chunksServed: 0, chunksReceived: 0, dontHaves: 0, badChunks: 0, strikes: 0 }
      this.peers.set(peerId, c)
    }
    return c
  }

  connected (peerId: string, now = Date.now()): void { this.get(peerId).connectedSince = now }
  disconnected (peerId: string): void { this.get(peerId).connectedSince = undefined }

  /** A BLOCK frame of `frameBytes` carrying `payloadBytes` of chunk was sent. */
  served (peerId: string, frameBytes: number, payloadBytes: number): void {
    const c = this.get(peerId)
    c.bytesUp += frameBytes
    c.chunkBytesUp += payloadBytes
    c.chunksServed++
  }

  /** A verified chunk of `payloadBytes` arrived (its frame is counted by bytesDown). */
  received (peerId: string, payloadBytes: number): void {
    const c = this.get(peerId)
    c.chunkBytesDown += payloadBytes
    c.chunksReceived++
  }

  /** Bytes that are not chunk payload (frames, heads). */
  bytesUp (peerId: string, bytes: number): void { this.get(peerId).bytesUp += bytes }
  bytesDown (peerId: string, bytes: number): void { this.get(peerId).bytesDown += bytes }
  dontHave (peerId: string): void { this.get(peerId).dontHaves++ }
  badChunk (peerId: string): void { this.get(peerId).badChunks++ }

  /** Counts a strike; calls onBudgetExceeded each time the count reaches a multiple of maxStrikes. */
  strike (peerId: string, reason: string): void {
    const c = this.get(peerId)
    c.strikes++
    c.lastStrike = reason
    if (c.strikes % this.maxStrikes === 0) this.onBudgetExceeded?.(peerId, c.strikes)
  }

  /** A MisbehaviourHandler that records strikes here and then calls `next` (e.g. a logger). */
  misbehaviourHandler (next?: MisbehaviourHandler): MisbehaviourHandler {
    return (peerId, reason) => {
      this.strike(peerId, reason)
      next?.(peerId, reason)
    }
  }

  /** Keeps connectedSince up to date from the node's peer:connect / peer:disconnect events. Returns a detach function. */
  attach (libp2p: Pick<Libp2p, 'addEventListener' | 'removeEventListener'>): () => void {
    const onConnect = (evt: CustomEvent<PeerId>): void => this.connected(evt.detail.toString())
    const onDisconnect = (evt: CustomEvent<PeerId>): void => this.disconnected(evt.detail.toString())
    libp2p.addEventListener('peer:connect', onConnect)
    libp2p.addEventListener('peer:disconnect', onDisconnect)
    return () => {
      libp2p.removeEventListener('peer:connect', onConnect)
      libp2p.removeEventListener('peer:disconnect', onDisconnect)
    }
  }

  snapshot (): Record<string, PeerCounters> {
    const out: Record<string, PeerCounters> = {}
    for (const [k, v] of this.peers) out[k] = { ...v }
    return out
  }
}
