import { createHash } from 'node:crypto'
import { toHex, type ChunkId } from '../../protocol/chunk-id.js'
import { isHoleChunk } from '../../protocol/manifest.js'

// Decides which chunk to ask of which peer. Pure logic (no I/O, injected clock) so every policy here is
// unit-tested without sockets.
//
// Goal: when many sites pull the same new version, the origin uploads each chunk about once. Each chunk
// has an *owner* among the sites syncing that version, chosen by rendezvous hashing of (chunk, peer):
// every site computes the same owners from the same set, and a site joining or leaving moves only its
// own share. A site fetches the chunks it owns from complete holders (the origin); the others it takes
// from the partial holders that announced them (HAVE), waiting while their owner is alive and making
// progress — and falling back to any complete holder when the owner stalls, leaves, or never shows up.

const DEFAULT_IDLE_WAIT_MS = 2_000
/**
 * A busy peer's window is topped up once this much of it is free (or a quarter of a smaller window), not at
 * every chunk it delivers: each top-up is a WANT frame out and, at the peer, a BLOCKS frame back, so topping up
 * per chunk made small files cost a frame pair, a compression call and a filesystem round trip each.
 */
const REFILL_BYTES = 256 * 1024

export interface WantedChunk {
  id: ChunkId
  size: number
}

export interface SchedulerOptions {
  selfId: string
  /** Bytes outstanding per peer (bandwidth-delay product). */
  windowBytes: number
  /** How long a chunk owned by another syncing site may wait for that site before we take it from a complete holder. */
  ownerGraceMs: number
  /**
   * An owner that announced none of the chunks we need for this long is considered stalled (or not
   * needing them itself: a lab with an --include filter does not fetch what it does not want).
   */
  ownerStallMs: number
  /** false: no ownership, every chunk may come from any holder at once (small fetches such as manifests). */
  cooperative?: boolean
  /**
   * When a complete holder has room and every chunk we could ask it for is owned by another (slower) site,
   * we wait this long, then take them anyway: a site behind a thin line must not hold a fast one hostage.
   */
  idleWaitMs?: number
  /**
   * Adapts each peer's window to the rate it delivers at: about `seconds` of its observed rate, never below
   * `minBytes` nor above windowBytes. Without it every peer gets windowBytes. A fixed window that keeps a fast
   * peer busy buries a slow one: 8 MiB asked of a site sending 250 KB/s (a 2 MB/s uplink shared by 8) waits
   * half a minute there while faster holders idle (measured: 8 sites at 2 MB/s took 28 s for a 5 s bound).
   */
  adaptiveWindow?: { minBytes: number, seconds: number }
  /** Whether a syncing site can fetch its share from someone other than us (default: yes): only then may it own chunks. */
  canOwn?: (peerId: string) => boolean
  now?: () => number
}

/** Decay constant of the per-peer rate meter: the rate of roughly the last few seconds of deliveries. */
const RATE_DECAY_MS = 3_000
/** Busy time the meter needs before its rate is believed. */
const RATE_MIN_SAMPLE_MS = 300

interface PeerState {
  complete: boolean
  /** Hex ids this (partial) peer announced it holds. */
  has: Set<string>
  /** Hex ids this peer said it does not have (DONT_HAVE); not asked again unless it announces them. */
  lacks: Set<string>
  outstandingBytes: number
  inFlight: Set<string>
  lastHaveMs: number
  /** When the peer first announced a chunk we need: from then on it is fetching, not still planning. */
  fetchingSinceMs?: number
  banned: boolean
  /** Decayed bytes delivered and busy time (ms with requests outstanding) behind them: the rate meter. */
  meterBytes: number
  meterMs: number
  /** Start of the current busy stretch, or the last delivery within it. */
  busyMarkMs: number
}

export interface Assignment {
  peerId: string
  chunks: WantedChunk[]
}

export class SwarmScheduler {
  private readonly needed = new Map<string, WantedChunk>()
  /** Needed chunks in the order we try them: our own share first, then by rendezvous score. */
  private order: string[] = []
  /** Everything in `order` before this index is done or in flight (so next() need not look at it again). */
  private cursor = 0
  private readonly inFlight = new Map<string, string>()
  private readonly peers = new Map<string, PeerState>()
  /** Other sites syncing the same version (partial holders), for ownership. */
  private readonly syncing = new Set<string>()
  private readonly ownerCache = new Map<string, string>()
  private readonly startedAtMs: number
  private idleSinceMs: number | undefined
  private readonly now: () => number

  constructor (private readonly options: SchedulerOptions) {
    this.now = options.now ?? Date.now
    this.startedAtMs = this.now()
  }

  /** A hole (zeros of a sparse file) is never needed: nobody serves one, the materializer leaves it unwritten. */
  setNeeded (chunks: Iterable<WantedChunk>): void {
    for (const c of chunks) if (!isHoleChunk(c.id)) this.needed.set(toHex(c.id), c)
    this.reorder()
  }

  get remaining (): number { return this.needed.size }
  get remainingBytes (): number { let n = 0; for (const c of this.needed.values()) n += c.size; return n }
  isNeeded (hex: string): boolean { return this.needed.has(hex) }

  /** A peer that holds the whole version (publisher or finished site), or a partial one (syncing it too). */
  setPeer (peerId: string, complete: boolean): void {
    const existing = this.peers.get(peerId)
    if (existing !== undefined) {
      // a peer that now holds the whole version has every chunk it said it lacked while it was syncing it
      // (without this, a chunk asked of a hub mid-sync was never asked of it again: the walkthrough's lab waited forever)
      if (complete && !existing.complete) existing.lacks.clear()
      existing.complete = complete
    } else {
      this.peers.set(peerId, { complete, has: new Set(), lacks: new Set(), outstandingBytes: 0, inFlight: new Set(), lastHaveMs: this.now(), banned: false, meterBytes: 0, meterMs: 0, busyMarkMs: 0 })
    }
    const wasSyncing = this.syncing.has(peerId)
    // a syncing site that can only fetch through us owns nothing: waiting for it to fetch its share would wait
    // for ourselves (a lab behind a hub while the hub syncs the same version) until the grace period ran out
    if (!complete && !wasSyncing && peerId !== this.options.selfId && (this.options.canOwn?.(peerId) ?? true)) { this.syncing.add(peerId); this.reorder() }
    if (complete && wasSyncing) { this.syncing.delete(peerId); this.reorder() }
  }

  /** A peer disconnected: whatever it had in flight goes back to the pool. Returns those chunks. */
  removePeer (peerId: string): WantedChunk[] {
    const peer = this.peers.get(peerId)
    if (peer === undefined) return []
    const returned = [...peer.inFlight].map(hex => { this.inFlight.delete(hex); return this.needed.get(hex) }).filter((c): c is WantedChunk => c !== undefined)
    this.cursor = 0
    this.peers.delete(peerId)
    if (this.syncing.delete(peerId)) this.reorder()
    return returned
  }

  /** HAVE: a partial peer now holds these chunks. Only chunks we need count as progress of that peer. */
  peerHas (peerId: string, ids: Iterable<ChunkId | string>): void {
    const peer = this.peers.get(peerId)
    if (peer === undefined) return
    let useful = false
    for (const id of ids) {
      const hex = typeof id === 'string' ? id : toHex(id)
      peer.has.add(hex)
      peer.lacks.delete(hex)
      if (this.needed.has(hex)) useful = true
    }
    if (useful) { peer.lastHaveMs = this.now(); peer.fetchingSinceMs ??= peer.lastHaveMs }
  }

  /** A peer sent a chunk that did not hash to its id: never ask it again during this sync. */
  ban (peerId: string): WantedChunk[] {
    const peer = this.peers.get(peerId)
    if (peer !== undefined) peer.banned = true
    this.cursor = 0
    const returned = [...(peer?.inFlight ?? [])].map(hex => this.release(hex, peerId)).filter((c): c is WantedChunk => c !== undefined)
    return returned
  }

  received (id: ChunkId, peerId: string): void {
    const hex = toHex(id)
    const peer = this.peers.get(peerId)
    const chunk = this.needed.get(hex)
    if (peer !== undefined && chunk !== undefined && peer.inFlight.has(hex)) this.meter(peer, chunk.size)
    this.release(hex, peerId)
    this.needed.delete(hex)
  }

  private meter (peer: PeerState, bytes: number): void {
    const now = this.now()
    const elapsed = Math.max(0, now - peer.busyMarkMs)
    const keep = Math.exp(-elapsed / RATE_DECAY_MS)
    peer.meterBytes = peer.meterBytes * keep + bytes
    peer.meterMs = peer.meterMs * keep + elapsed
    peer.busyMarkMs = now
  }

  /** Bytes we let be outstanding at this peer (see SchedulerOptions.adaptiveWindow). */
  windowOf (peer: PeerState): number {
    const max = this.options.windowBytes
    const adaptive = this.options.adaptiveWindow
    if (adaptive === undefined) return max
    // before the meter has seen enough: a modest start that grows within a round trip if the peer is fast
    if (peer.meterMs < RATE_MIN_SAMPLE_MS) return Math.min(max, 2 * adaptive.minBytes)
    const rate = peer.meterBytes / peer.meterMs * 1000
    return Math.min(max, Math.max(adaptive.minBytes, rate * adaptive.seconds))
  }

  /** Local completion (e.g. the chunk turned up on disk) without a peer. */
  satisfied (id: ChunkId): void {
    const hex = toHex(id)
    const holder = this.inFlight.get(hex)
    if (holder !== undefined) this.release(hex, holder)
    this.needed.delete(hex)
  }

  /** The peer answered DONT_HAVE or the request failed: try elsewhere. */
  failed (id: ChunkId, peerId: string, reason: 'dont-have' | 'error'): void {
    const hex = toHex(id)
    this.release(hex, peerId)
    this.cursor = 0 // back in the pool: next() must look at it again
    const peer = this.peers.get(peerId)
    if (peer !== undefined && reason === 'dont-have') { peer.lacks.add(hex); peer.has.delete(hex) }
  }

  private release (hex: string, peerId: string): WantedChunk | undefined {
    const chunk = this.needed.get(hex)
    if (this.inFlight.get(hex) === peerId) this.inFlight.delete(hex)
    const peer = this.peers.get(peerId)
    if (peer !== undefined && peer.inFlight.delete(hex) && chunk !== undefined) peer.outstandingBytes -= chunk.size
    return chunk
  }

  /**
   * Fills every peer's window with the chunks it should serve. Marks them in flight; the caller sends the
   * WANTs and reports back with received/failed.
   */
  next (): Assignment[] {
    const open = [...this.peers.entries()].filter(([, p]) => !p.banned && this.wantsMore(p))
    if (open.length === 0 || this.needed.size === 0) return []
    const now = this.now()
    let out = this.assign(open, now, false)
    // Impatience (taking other owners' chunks from a complete holder) only helps when no complete holder is
    // still working on our requests: if one is, it is the bottleneck (a limited uplink shares itself per peer),
    // and asking it for more only turns the swarm into a star (scale benchmark: 16 sites, 16 copies uploaded).
    const waitingOnComplete = [...this.peers.values()].some(p => p.complete && p.inFlight.size > 0)
    if (out.size > 0 || this.inFlight.size >= this.needed.size || waitingOnComplete || !open.some(([, p]) => p.complete)) {
      this.idleSinceMs = undefined
    } else {
      this.idleSinceMs ??= now
      if (now - this.idleSinceMs >= (this.options.idleWaitMs ?? DEFAULT_IDLE_WAIT_MS)) out = this.assign(open, now, true)
    }
    return [...out.entries()].map(([peerId, chunks]) => ({ peerId, chunks }))
  }

  private wantsMore (peer: PeerState): boolean {
    if (peer.outstandingBytes === 0) return true
    const window = this.windowOf(peer)
    return window - peer.outstandingBytes >= Math.min(REFILL_BYTES, window / 4)
  }

  private assign (open: Array<[string, PeerState]>, now: number, impatient: boolean): Map<string, WantedChunk[]> {
    const out = new Map<string, WantedChunk[]>()
    while (this.cursor < this.order.length) {
      const hex = this.order[this.cursor] as string
      if (!this.inFlight.has(hex) && this.needed.has(hex)) break
      this.cursor++
    }
    for (let i = this.cursor; i < this.order.length; i++) {
      const hex = this.order[i] as string
      if (this.inFlight.has(hex) || !this.needed.has(hex)) continue
      const chunk = this.needed.get(hex) as WantedChunk
      const target = this.pickPeer(hex, open, now, impatient)
      if (target === undefined) continue
      const [peerId, peer] = target
      if (peer.outstandingBytes === 0) peer.busyMarkMs = now
      peer.outstandingBytes += chunk.size
      peer.inFlight.add(hex)
      this.inFlight.set(hex, peerId)
      let list = out.get(peerId)
      if (list === undefined) { list = []; out.set(peerId, list) }
      list.push(chunk)
      if (open.every(([, p]) => p.outstandingBytes >= this.windowOf(p))) break
    }
    return out
  }

  /** True when some needed chunk has no possible source at all (no complete holder, no partial holder has it). */
  get starved (): boolean {
    if (this.needed.size === 0) return false
    const usable = [...this.peers.values()].filter(p => !p.banned)
    if (usable.some(p => p.complete)) return false
    for (const hex of this.needed.keys()) {
      if (this.inFlight.has(hex)) continue
      if (!usable.some(p => p.has.has(hex) && !p.lacks.has(hex))) return true
    }
    return false
  }

  /**
   * When nothing is in flight: the needed chunks that no peer can be asked for (no complete holder that did
   * not answer DONT_HAVE for it, no partial holder that announced it), and how many peers could be asked at
   * all. Undefined while requests are in flight or every needed chunk has a source: the sync still moves.
   */
  unreachable (): { chunks: number, bytes: number, usablePeers: number } | undefined {
    if (this.needed.size === 0 || this.inFlight.size > 0) return undefined
    const usable = [...this.peers.values()].filter(p => !p.banned)
    let chunks = 0
    let bytes = 0
    for (const [hex, c] of this.needed) {
      if (usable.some(p => !p.lacks.has(hex) && (p.complete || p.has.has(hex)))) continue
      chunks++
      bytes += c.size
    }
    return chunks === 0 ? undefined : { chunks, bytes, usablePeers: usable.length }
  }

  private pickPeer (hex: string, open: Array<[string, PeerState]>, now: number, impatient: boolean): [string, PeerState] | undefined {
    let best: [string, PeerState] | undefined
    // Partial holders first: whatever they already hold costs the origin nothing.
    for (const entry of open) {
      const [, p] = entry
      if (p.complete || p.outstandingBytes >= this.windowOf(p) || !p.has.has(hex) || p.lacks.has(hex)) continue
      if (best === undefined || this.fill(p) < this.fill(best[1])) best = entry
    }
    if (best !== undefined) return best
    if (!this.mayTakeFromComplete(hex, now, impatient)) return undefined
    for (const entry of open) {
      const [, p] = entry
      if (!p.complete || p.outstandingBytes >= this.windowOf(p) || p.lacks.has(hex)) continue
      if (best === undefined || this.fill(p) < this.fill(best[1])) best = entry
    }
    return best
  }

  /** How full a peer's window is: the emptiest relative to what it delivers gets the next chunk. */
  private fill (p: PeerState): number { return p.outstandingBytes / this.windowOf(p) }

  /**
   * An owner still planning (materializing what it has locally can take a while) is waited for up to
   * ownerGraceMs; once it fetches, it keeps its share while it makes progress (ownerStallMs) — unless we
   * are idle (impatient) and it is merely slower than us.
   */
  private mayTakeFromComplete (hex: string, now: number, impatient: boolean): boolean {
    if (this.options.cooperative === false) return true
    const owner = this.ownerOf(hex)
    if (owner === this.options.selfId) return true
    const ownerState = this.peers.get(owner)
    if (ownerState === undefined || ownerState.banned || ownerState.complete) return true
    if (ownerState.fetchingSinceMs === undefined) return now - this.startedAtMs >= this.options.ownerGraceMs
    return impatient || now - ownerState.lastHaveMs > this.options.ownerStallMs
  }

  ownerOf (hex: string): string {
    // nobody else is syncing this version: every chunk is ours (no hash per chunk to say so)
    if (this.syncing.size === 0) return this.options.selfId
    const cached = this.ownerCache.get(hex)
    if (cached !== undefined) return cached
    let best = this.options.selfId
    let bestScore = score(hex, best)
    for (const peerId of this.syncing) {
      const s = score(hex, peerId)
      if (s > bestScore) { best = peerId; bestScore = s }
    }
    this.ownerCache.set(hex, best)
    return best
  }

  private reorder (): void {
    this.ownerCache.clear()
    const self = this.options.selfId
    const mine: string[] = []
    const others: string[] = []
    for (const hex of this.needed.keys()) (this.ownerOf(hex) === self ? mine : others).push(hex)
    // Each share in the order the chunks were needed (the plan's: manifest order, a file's chunks one after the
    // other), so that the site serving them reads its files front to back (its read-ahead of chunk locations and
    // its reads in runs hit, a disk does not seek) and we write ours in order. Spreading concurrent sites over
    // different chunks is ownership's job (each fetches its own share first). This was rendezvous-score order:
    // random across the whole tree, even for a lone subscriber; the origin then looked up nearly every chunk
    // in its database and read 1,648 .debs in random order (docs/design-notes.md, issue 17).
    this.order = [...mine, ...others]
    this.cursor = 0
  }
}

/** Rendezvous score of a (chunk, peer) pair: the first 6 bytes of sha256(chunk ‖ peer) as a number. */
function score (hex: string, peerId: string): number {
  return createHash('sha256').update(hex).update(peerId).digest().readUIntBE(0, 6)
}
