// /deltamesh/haves/1.0.0: HAVE frames straight to the peers that use them. A HAVE only steers a direct peer
// (chunks are fetched over a direct connection), yet gossip signed every HAVE, and every site verified and
// relayed every other's: with 16 sites syncing one tree that was 26–40 % of a subscriber's CPU (profiled),
// growing with sites × sites. Here each site keeps one outbound stream per peer (opened on first use, on
// the existing connection) and sends each HAVE once to each peer that is syncing the same version; the
// connection's Noise handshake already says who sent it, so there is nothing to sign, verify or relay.
//
// Who gets what: an empty HAVE (the beacon, "I am syncing tree@seq") goes to every connected peer, and a
// peer heard beaconing or HAVE-ing tree@seq within INTEREST_MS gets our HAVEs for it. A site holding the
// version (the origin) never beacons and so is never sent the lists. Frames to a slow peer queue up to
// MAX_QUEUED_BYTES; beyond that they are dropped — a HAVE is a hint, and the next one repeats nothing.
import type { Connection, Libp2p, PeerId, Stream } from '@libp2p/interface'
import { HAVES_PROTOCOL } from '../../protocol/ids.js'
import { InvalidMessageError } from '../../protocol/errors.js'
import { MAX_HAVE_IDS, type HaveMessage } from '../../protocol/have.js'
import { MAX_HAVE_FRAME_BYTES } from '../../protocol/wire-limits.js'
import type { ChunkId } from '../../protocol/chunk-id.js'
import { encodeFrame } from '../../protocol/frame-encode.js'
import { FrameStream, type EncodedFrame } from './frames.js'
import type { MisbehaviourHandler, PeerStats } from './peer-stats.js'

/** How long a peer counts as syncing tree@seq after its last beacon or HAVE (they come every ≤ 1 s). */
export const INTEREST_MS = 10_000
/** Unsent HAVE bytes per peer before new frames to it are dropped. */
const MAX_QUEUED_BYTES = 2 * MAX_HAVE_FRAME_BYTES
/** Inbound haves streams per connection: one, plus one while a reset stream is replaced. */
const MAX_INBOUND_HAVE_STREAMS = 2
/** Opening a stream on an existing connection. */
const OPEN_TIMEOUT_MS = 10_000

export interface HaveServiceComponents {
  libp2p: Pick<Libp2p, 'handle' | 'unhandle' | 'getConnections' | 'logger'>
  allowlist?: { has (peer: PeerId): boolean }
  stats?: PeerStats
  /** A HAVE from the direct peer `origin`, for a tree this site is listening to. */
  onHave: (origin: string, have: HaveMessage) => void
  onMisbehaviour?: MisbehaviourHandler
}

interface Outbound {
  frames?: FrameStream
  opening?: Promise<FrameStream>
  queue: EncodedFrame[]
  queuedBytes: number
  pumping: boolean
}

export class HaveService {
  private readonly log
  private readonly trees = new Set<string>()
  private readonly listening = new Set<string>()
  /** `${peer}\0${tree}` → the seq it syncs and when we last heard so. */
  private readonly interest = new Map<string, { seq: number, at: number }>()
  private readonly outbound = new Map<string, Outbound>()
  private running = false
  /** Frames dropped because a peer's queue was full (status, tests). */
  dropped = 0

  constructor (private readonly components: HaveServiceComponents, private readonly now: () => number = Date.now) {
    this.log = components.libp2p.logger.forComponent('deltamesh:haves')
  }

  async start (): Promise<void> {
    if (this.running) return
    await this.components.libp2p.handle(HAVES_PROTOCOL, (stream, connection) => { this.receive(stream, connection).catch(() => {}) }, { maxInboundStreams: MAX_INBOUND_HAVE_STREAMS })
    this.running = true
  }

  async stop (): Promise<void> {
    if (!this.running) return
    this.running = false
    await this.components.libp2p.unhandle(HAVES_PROTOCOL)
    for (const out of this.outbound.values()) out.frames?.stream.abort(new Error('stopping'))
    this.outbound.clear()
  }

  /** HAVEs of `tree` are accepted from now on (listen() decides whether they are acted on). */
  subscribe (tree: string): void {
    this.trees.add(tree)
  }

  /** A sync of `tree` starts (HAVEs heard are passed on) or ends (they are dropped). */
  listen (tree: string, on: boolean): void {
    this.subscribe(tree)
    if (on) this.listening.add(tree)
    else this.listening.delete(tree)
  }

  isListening (tree: string): boolean {
    return this.listening.has(tree)
  }

  /**
   * Sends the ids (in frames of at most MAX_HAVE_IDS) to every connected peer syncing tree@seq; an empty
   * list is the beacon and goes to every connected peer.
   */
  async announce (tree: string, seq: number, ids: ChunkId[]): Promise<void> {
    if (!this.running) return
    const now = this.now()
    const peers = this.connectedPeers().filter(p => {
      if (ids.length === 0) return true
      const heard = this.interest.get(`${p.toString()}\0${tree}`)
      return heard !== undefined && heard.seq === seq && now - heard.at < INTEREST_MS
    })
    if (peers.length === 0) return
    for (let i = 0; i === 0 || i < ids.length; i += MAX_HAVE_IDS) {
      const frame = encodeFrame({ type: 'HAVE', have: { tree, seq, ids: ids.slice(i, i + MAX_HAVE_IDS) } })
      for (const p of peers) this.enqueue(p, frame)
    }
  }

  private connectedPeers (): PeerId[] {
    const peers = new Map<string, PeerId>()
    for (const c of this.components.libp2p.getConnections()) {
      if (c.status === 'open' && (this.components.allowlist === undefined || this.components.allowlist.has(c.remotePeer))) peers.set(c.remotePeer.toString(), c.remotePeer)
    }
    return [...peers.values()]
  }

  private enqueue (peer: PeerId, frame: EncodedFrame): void {
    const key = peer.toString()
    let out = this.outbound.get(key)
    if (out === undefined) {
      out = { queue: [], queuedBytes: 0, pumping: false }
      this.outbound.set(key, out)
    }
    if (out.queuedBytes + frame.wireBytes > MAX_QUEUED_BYTES) { this.dropped++; return }
    out.queue.push(frame)
    out.queuedBytes += frame.wireBytes
    if (!out.pumping) this.pump(peer, out).catch(() => {})
  }

  private async pump (peer: PeerId, out: Outbound): Promise<void> {
    out.pumping = true
    const key = peer.toString()
    try {
      while (out.queue.length > 0 && this.running) {
        const frames = out.frames ?? await this.open(peer, out)
        const frame = out.queue.shift() as EncodedFrame
        out.queuedBytes -= frame.wireBytes
        const sent = await frames.writeEncoded(frame, AbortSignal.timeout(OPEN_TIMEOUT_MS))
        this.components.stats?.bytesUp(key, sent)
      }
    } catch (err) {
      // the connection went, or the peer stopped reading: forget the stream (and what was queued for it)
      this.log('HAVEs to %p stopped - %e', peer, err)
      out.frames?.stream.abort(err as Error)
      if (this.outbound.get(key) === out) this.outbound.delete(key)
    } finally {
      out.pumping = false
    }
  }

  private async open (peer: PeerId, out: Outbound): Promise<FrameStream> {
    const connection = this.components.libp2p.getConnections(peer).find(c => c.status === 'open')
    if (connection === undefined) throw new Error('not connected')
    const stream = await connection.newStream(HAVES_PROTOCOL, { signal: AbortSignal.timeout(OPEN_TIMEOUT_MS) })
    // nothing is read on this stream; the limits only bound what a misbehaving peer could make us buffer
    out.frames = new FrameStream(stream, { maxFrameBytes: 256, maxBufferBytes: 256 })
    return out.frames
  }

  private async receive (stream: Stream, connection: Connection): Promise<void> {
    const peer = connection.remotePeer.toString()
    if (!this.running || (this.components.allowlist !== undefined && !this.components.allowlist.has(connection.remotePeer))) {
      stream.abort(new Error('not serving this peer'))
      return
    }
    const frames = new FrameStream(stream, { maxFrameBytes: MAX_HAVE_FRAME_BYTES, maxBufferBytes: 2 * MAX_HAVE_FRAME_BYTES })
    try {
      for (;;) {
        const before = frames.bytesRead
        const msg = await frames.read()
        if (msg === undefined) break
        this.components.stats?.bytesDown(peer, frames.bytesRead - before)
        if (msg.type !== 'HAVE') throw new InvalidMessageError(`haves: unexpected ${msg.type} frame`)
        const have = msg.have
        if (!this.trees.has(have.tree)) continue
        this.interest.set(`${peer}\0${have.tree}`, { seq: have.seq, at: this.now() })
        if (this.listening.has(have.tree)) this.components.onHave(peer, have)
      }
      await stream.close()
    } catch (err) {
      if (err instanceof InvalidMessageError) {
        this.components.onMisbehaviour?.(peer, err.message)
        await frames.abortWithError('INVALID_REQUEST', err.message, err)
        return
      }
      this.log('HAVEs from %s ended - %e', peer, err)
      stream.abort(err as Error)
    }
  }
}
