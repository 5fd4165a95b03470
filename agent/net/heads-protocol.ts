// /deltamesh/heads/1.0.0: "what I hold". The side that dialled a connection opens one exchange on it
// (HEADS with wantReply → HEADS); broadcastHeads() pushes ours to every connected peer without asking for a
// reply. Every envelope is signature-checked (openEnvelope) before anything is emitted.
import type { Connection, Libp2p, PeerId, Stream } from '@libp2p/interface'
import { HEADS_PROTOCOL } from '../../protocol/ids.js'
import { InvalidMessageError } from '../../protocol/errors.js'
import { openEnvelope, type Envelope } from '../../protocol/envelope.js'
import { MAX_HEADS_FRAME_BYTES, MAX_INBOUND_HEADS_STREAMS } from '../../protocol/wire-limits.js'
import type { HeadEntry, HeadsMessage } from '../../protocol/messages.js'
import { FrameStream } from './frames.js'
import { ProtocolViolationError } from './errors.js'
import type { MisbehaviourHandler, PeerStats } from './peer-stats.js'
import { rejectReasonOf, type RejectReason } from './admission.js'

/** One exchange (open, send, read the reply). */
export const DEFAULT_HEADS_TIMEOUT_MS = 10_000

export interface HeadsProvider {
  /** The newest envelope per tree we hold, and whether we hold that version completely. */
  heads (): Promise<HeadEntry[]>
}

/** A head from a peer, its envelope verified (signature only: whether the key is trusted is the caller's question). */
export interface ReceivedHead {
  envelope: Envelope
  complete: boolean
}

export interface HeadsComponents {
  libp2p: Pick<Libp2p, 'handle' | 'unhandle' | 'dialProtocol' | 'getConnections' | 'addEventListener' | 'removeEventListener' | 'logger'>
  provider: HeadsProvider
  allowlist?: { has (peer: PeerId): boolean }
  stats?: PeerStats
  onHeads: (peerId: PeerId, heads: ReceivedHead[]) => void
  onMisbehaviour?: MisbehaviourHandler
  /** A head whose envelope was refused before admission (bad signature, undecodable, not the tree/seq it claims). */
  onRejected?: (peerId: PeerId, reason: RejectReason, message: string) => void
}

export interface HeadsInit {
  timeoutMs?: number
  /** Default true: exchange heads on every outbound connection. */
  exchangeOnConnect?: boolean
}

export class HeadsProtocol {
  private readonly log
  private readonly timeoutMs: number
  private readonly exchangeOnConnect: boolean
  private readonly controller = new AbortController()
  private running = false

  constructor (private readonly components: HeadsComponents, init: HeadsInit = {}) {
    this.log = components.libp2p.logger.forComponent('deltamesh:heads')
    this.timeoutMs = init.timeoutMs ?? DEFAULT_HEADS_TIMEOUT_MS
    this.exchangeOnConnect = init.exchangeOnConnect ?? true
    this.onConnectionOpen = this.onConnectionOpen.bind(this)
  }

  async start (): Promise<void> {
    if (this.running) return
    await this.components.libp2p.handle(HEADS_PROTOCOL, (stream, connection) => this.handle(stream, connection), {
      maxInboundStreams: MAX_INBOUND_HEADS_STREAMS,
    })
    if (this.exchangeOnConnect) this.components.libp2p.addEventListener('connection:open', this.onConnectionOpen)
    this.running = true
  }

  async stop (): Promise<void> {
    if (!this.running) return
    this.running = false
    this.components.libp2p.removeEventListener('connection:open', this.onConnectionOpen)
    this.controller.abort()
    await this.components.libp2p.unhandle(HEADS_PROTOCOL)
  }

  /** Sends our heads to `peerId` and returns theirs (also emitted through onHeads). */
  async requestHeads (peerId: PeerId, signal?: AbortSignal): Promise<ReceivedHead[]> {
    const heads = await this.exchange(peerId, true, signal)
    return heads ?? []
  }

  /** Pushes our heads to every connected allowed peer (after a sync completes, after a publish). */
  async broadcastHeads (signal?: AbortSignal): Promise<void> {
    const peers = new Map<string, PeerId>()
    for (const c of this.components.libp2p.getConnections()) {
      if (c.status === 'open' && this.allowed(c.remotePeer)) peers.set(c.remotePeer.toString(), c.remotePeer)
    }
    await Promise.all([...peers.values()].map(async p => {
      try {
        await this.exchange(p, false, signal)
      } catch (err) {
        this.log('pushing heads to %p failed - %e', p, err)
      }
    }))
  }

  private allowed (peerId: PeerId): boolean {
    return this.components.allowlist === undefined || this.components.allowlist.has(peerId)
  }

  private onConnectionOpen (evt: CustomEvent<Connection>): void {
    const conn = evt.detail
    if (!this.running || conn.direction !== 'outbound' || !this.allowed(conn.remotePeer)) return
    this.exchange(conn.remotePeer, true).catch(err => this.log('heads exchange with %p on connect failed - %e', conn.remotePeer, err))
  }

  private signal (signal?: AbortSignal): AbortSignal {
    const parts = [this.controller.signal, AbortSignal.timeout(this.timeoutMs)]
    if (signal !== undefined) parts.push(signal)
    return AbortSignal.any(parts)
  }

  private async exchange (peerId: PeerId, wantReply: boolean, callerSignal?: AbortSignal): Promise<ReceivedHead[] | undefined> {
    const signal = this.signal(callerSignal)
    const stream = await this.components.libp2p.dialProtocol(peerId, HEADS_PROTOCOL, { signal })
    const frames = new FrameStream(stream, { maxFrameBytes: MAX_HEADS_FRAME_BYTES, maxBufferBytes: MAX_HEADS_FRAME_BYTES })
    const onAbort = (): void => stream.abort(new Error('heads exchange aborted'))
    signal.addEventListener('abort', onAbort, { once: true })
    try {
      const ours = await this.components.provider.heads()
      const sent = await frames.write({ type: 'HEADS', heads: ours, wantReply }, signal)
      this.components.stats?.bytesUp(peerId.toString(), sent)
      if (!wantReply) {
        await stream.close({ signal })
        return undefined
      }
      const heads = await this.readHeads(peerId, frames)
      await stream.close({ signal })
      return heads
    } catch (err) {
      stream.abort(err as Error)
      throw err
    } finally {
      signal.removeEventListener('abort', onAbort)
    }
  }

  private async handle (stream: Stream, connection: Connection): Promise<void> {
    const peerId = connection.remotePeer
    if (!this.running || !this.allowed(peerId)) {
      stream.abort(new Error('not serving this peer'))
      return
    }
    const signal = this.signal()
    const frames = new FrameStream(stream, { maxFrameBytes: MAX_HEADS_FRAME_BYTES, maxBufferBytes: MAX_HEADS_FRAME_BYTES })
    const onAbort = (): void => stream.abort(new Error('heads exchange timed out'))
    signal.addEventListener('abort', onAbort, { once: true })
    try {
      const msg = await this.readHeadsMessage(peerId, frames)
      if (msg === undefined) return
      this.emit(peerId, msg)
      if (msg.wantReply) {
        const ours = await this.components.provider.heads()
        const sent = await frames.write({ type: 'HEADS', heads: ours, wantReply: false }, signal)
        this.components.stats?.bytesUp(peerId.toString(), sent)
      }
      await stream.close({ signal })
    } catch (err) {
      if (err instanceof ProtocolViolationError) {
        this.components.onMisbehaviour?.(peerId.toString(), err.message)
        await frames.abortWithError('INVALID_REQUEST', err.message, err)
      } else {
        this.log('heads exchange from %p failed - %e', peerId, err)
        stream.abort(err as Error)
      }
    } finally {
      signal.removeEventListener('abort', onAbort)
    }
  }

  private async readHeads (peerId: PeerId, frames: FrameStream): Promise<ReceivedHead[]> {
    try {
      const msg = await this.readHeadsMessage(peerId, frames)
      if (msg === undefined) throw new ProtocolViolationError(peerId.toString(), 'closed the heads stream without answering')
      return this.emit(peerId, msg)
    } catch (err) {
      if (err instanceof ProtocolViolationError) this.components.onMisbehaviour?.(peerId.toString(), err.message)
      throw err
    }
  }

  /** The next frame as HEADS; anything else from the peer is a ProtocolViolationError. */
  private async readHeadsMessage (peerId: PeerId, frames: FrameStream): Promise<HeadsMessage | undefined> {
    let msg
    try {
      msg = await frames.read()
    } catch (err) {
      if (err instanceof InvalidMessageError) throw new ProtocolViolationError(peerId.toString(), (err as Error).message, { cause: err })
      throw err
    }
    if (msg === undefined) return undefined
    this.components.stats?.bytesDown(peerId.toString(), frames.bytesRead)
    if (msg.type === 'ERROR') throw new Error(`peer refused heads exchange: ${msg.code} ${msg.message}`)
    if (msg.type !== 'HEADS') throw new ProtocolViolationError(peerId.toString(), `unexpected ${msg.type} frame on the heads stream`)
    return msg
  }

  /** Opens every envelope; a bad one is a strike and is skipped, the rest are emitted. */
  private emit (peerId: PeerId, msg: HeadsMessage): ReceivedHead[] {
    const peer = peerId.toString()
    const out: ReceivedHead[] = []
    for (const h of msg.heads) {
      let envelope: Envelope | undefined
      let reason: RejectReason = 'malformed'
      let error: Error | undefined
      try {
        envelope = openEnvelope(h.envelope)
      } catch (err) {
        reason = rejectReasonOf(err)
        error = err as Error
      }
      if (envelope !== undefined && (envelope.tree !== h.tree || envelope.seq !== h.seq)) {
        reason = envelope.tree !== h.tree ? 'wrong-tree' : 'malformed'
        error = new InvalidMessageError(`head says ${h.tree}@${h.seq}, envelope is ${envelope.tree}@${envelope.seq}`)
      }
      if (envelope === undefined || error !== undefined) {
        const message = error?.message ?? 'no envelope'
        this.log('bad head from %p - %s', peerId, message)
        this.components.onRejected?.(peerId, reason, `${reason} head for ${h.tree}: ${message}`)
        this.components.onMisbehaviour?.(peer, `bad head for ${h.tree}: ${message}`)
        continue
      }
      out.push({ envelope, complete: h.complete })
    }
    try {
      this.components.onHeads(peerId, out)
    } catch (err) {
      this.log.error('onHeads listener threw - %e', err)
    }
    return out
  }
}

