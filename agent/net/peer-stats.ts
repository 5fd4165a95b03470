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

/** `weight` is how many strikes the offence costs (default 1; see BAD_CHUNK_STRIKES). */
export type MisbehaviourHandler = (peerId: string, reason: string, weight?: number) => void

export interface StrikeInit {
  /** Strikes after which `onBudgetExceeded` is called (the agent bans the peer: see bans.ts). */
  maxStrikes?: number
  onBudgetExceeded?: (peerId: string, strikes: number) => void
}

/** Borrowed from hypercore's MAX_INVALID_REQUESTS idea, scaled down: 16 bad frames and the peer is banned. */
export const DEFAULT_MAX_STRIKES = 16

/**
 * A chunk that does not hash to its id costs 4 strikes: a malformed frame can be a bug on a tired link, but
 * wrong bytes under a right id are a lie (or a corrupt disk nobody noticed) and 4 of them exhaust the budget.
 */
export const BAD_CHUNK_STRIKES = 4

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

  /**
   * A BLOCK frame (one chunk) or BLOCKS frame (`chunks` of them, compressed together) of `frameBytes` carrying
   * `payloadBytes` of chunk was sent. Chunks are counted one by one, as the receiver counts those it verified.
   */
  served (peerId: string, frameBytes: number, payloadBytes: number, chunks = 1): void {
    const c = this.get(peerId)
    c.bytesUp += frameBytes
    c.chunkBytesUp += payloadBytes
    c.chunksServed += chunks
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

  /** Counts `weight` strikes; calls onBudgetExceeded each time the count crosses a multiple of maxStrikes. */
  strike (peerId: string, reason: string, weight = 1): void {
    const c = this.get(peerId)
    const before = c.strikes
    c.strikes += Math.max(1, Math.floor(weight))
    c.lastStrike = reason
    if (Math.floor(c.strikes / this.maxStrikes) > Math.floor(before / this.maxStrikes)) this.onBudgetExceeded?.(peerId, c.strikes)
  }

  /** A MisbehaviourHandler that records strikes here and then calls `next` (e.g. a logger). */
  misbehaviourHandler (next?: MisbehaviourHandler): MisbehaviourHandler {
    return (peerId, reason, weight) => {
      this.strike(peerId, reason, weight)
      next?.(peerId, reason, weight)
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
