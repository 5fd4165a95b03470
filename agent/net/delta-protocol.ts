// /deltamesh/deltas/2.0.0 (and 1.0.0): one request per stream. The client sends DELTA_WANT (keys); the server
// answers every key, in order, with DELTA, or — for a run of keys it has no delta for — one DELTA_NONE (2.0.0)
// or a DONT_HAVE per key (1.0.0), then closes. The client offers 2.0.0 first; a peer that speaks neither (an
// older agent) fails the dial, and the caller fetches plain chunks: deltas only ever save bytes, never decide
// content.
import type { Connection, Libp2p, PeerId, Stream } from '@libp2p/interface'
import { DELTAS_PROTOCOL, DELTAS_PROTOCOL_2 } from '../../protocol/ids.js'
import { toHex } from '../../protocol/chunk-id.js'
import { InvalidMessageError } from '../../protocol/errors.js'
import type { Message } from '../../protocol/messages.js'
import { MAX_DELTA_FRAME_BYTES, MAX_DELTA_WANTS, MAX_REQUEST_FRAME_BYTES } from '../../protocol/wire-limits.js'
import { FrameStream, type EncodedFrame } from './frames.js'
import { joinFrames } from '../../protocol/frame-encode.js'
import { ProtocolViolationError } from './errors.js'
import type { MisbehaviourHandler, PeerStats } from './peer-stats.js'

export interface DeltaProvider {
  /** The deltas held for `keys`, in order (undefined: none). Called with at most LOOKUP_BATCH keys. */
  getMany (keys: Uint8Array[], signal: AbortSignal): Promise<Array<Uint8Array | undefined>>
  /** Upload pacing per frame, as for chunks. */
  pace? (peer: string, bytes: number, signal: AbortSignal): Promise<void>
}

export interface DeltaServiceComponents {
  libp2p: Pick<Libp2p, 'handle' | 'unhandle' | 'dialProtocol' | 'logger'>
  provider: DeltaProvider
  allowlist?: { has (peer: PeerId): boolean }
  stats?: PeerStats
  onMisbehaviour?: MisbehaviourHandler
}

export interface DeltaServiceInit {
  /** Deadline of one request (open, ask, read every answer). */
  timeoutMs?: number
}

export const DEFAULT_DELTA_TIMEOUT_MS = 30_000
/** Concurrent delta streams per connection: a subscriber asks once per version. */
const MAX_INBOUND_DELTA_STREAMS = 2
/**
 * Keys looked up in one database read. Bounds what one request holds in memory (a kept delta is at most half
 * of a 1 MiB target: 8 MiB at worst, a few KB typically), where a read per key cost a thread-pool round trip.
 */
const LOOKUP_BATCH = 16
/**
 * Answers are sent together up to this many bytes: each send is a yamux frame, a Noise frame and a socket
 * write, and a DELTA of a small file is a few hundred bytes.
 */
const COALESCE_BYTES = 64 * 1024

export class DeltaService {
  private readonly log
  private readonly timeoutMs: number
  private running = false

  constructor (private readonly components: DeltaServiceComponents, init: DeltaServiceInit = {}) {
    this.log = components.libp2p.logger.forComponent('deltamesh:deltas')
    this.timeoutMs = init.timeoutMs ?? DEFAULT_DELTA_TIMEOUT_MS
  }

  async start (): Promise<void> {
    if (this.running) return
    // one handle() per id: libp2p's registrar keys handlers by the value given, an array is not spread
    for (const protocol of [DELTAS_PROTOCOL_2, DELTAS_PROTOCOL]) {
      await this.components.libp2p.handle(protocol, (stream, connection) => this.serve(stream, connection), { maxInboundStreams: MAX_INBOUND_DELTA_STREAMS })
    }
    this.running = true
  }

  async stop (): Promise<void> {
    if (!this.running) return
    this.running = false
    for (const protocol of [DELTAS_PROTOCOL_2, DELTAS_PROTOCOL]) await this.components.libp2p.unhandle(protocol)
  }

  private async serve (stream: Stream, connection: Connection): Promise<void> {
    const peer = connection.remotePeer.toString()
    if (!this.running || (this.components.allowlist !== undefined && !this.components.allowlist.has(connection.remotePeer))) {
      stream.abort(new Error('not serving this peer'))
      return
    }
    const frames = new FrameStream(stream, { maxFrameBytes: MAX_REQUEST_FRAME_BYTES, maxBufferBytes: MAX_REQUEST_FRAME_BYTES })
    const signal = AbortSignal.timeout(this.timeoutMs)
    try {
      const msg = await frames.read(signal)
      if (msg?.type !== 'DELTA_WANT') throw new InvalidMessageError(`expected DELTA_WANT, got ${msg?.type ?? 'end of stream'}`)
      const runs = stream.protocol === DELTAS_PROTOCOL_2
      let misses = 0
      let pending: EncodedFrame[] = []
      let pendingBytes = 0
      const flush = async (): Promise<void> => {
        if (pending.length === 0) return
        const together = joinFrames(pending)
        pending = []
        pendingBytes = 0
        await this.components.provider.pace?.(peer, together.wireBytes, signal)
        const n = await frames.writeEncoded(together, signal) // not inside stats?.(…): without stats it would never run
        this.components.stats?.bytesUp(peer, n)
      }
      const send = async (reply: Message): Promise<void> => {
        const encoded = frames.encode(reply)
        pending.push(encoded)
        pendingBytes += encoded.wireBytes
        if (pendingBytes >= COALESCE_BYTES) await flush()
      }
      for (let i = 0; i < msg.keys.length; i += LOOKUP_BATCH) {
        const keys = msg.keys.slice(i, i + LOOKUP_BATCH)
        const found = await this.components.provider.getMany(keys, signal)
        signal.throwIfAborted()
        for (const [k, key] of keys.entries()) {
          const bytes = found[k]
          if (bytes === undefined && runs) { misses++; continue }
          if (misses > 0) { await send({ type: 'DELTA_NONE', count: misses }); misses = 0 }
          await send(bytes === undefined ? { type: 'DONT_HAVE', id: key } : { type: 'DELTA', key, bytes })
        }
      }
      if (misses > 0) await send({ type: 'DELTA_NONE', count: misses })
      await flush()
      await stream.close({ signal })
    } catch (err) {
      if (err instanceof InvalidMessageError) {
        this.components.onMisbehaviour?.(peer, `deltas: ${err.message}`)
        await frames.abortWithError('INVALID_REQUEST', err.message, err)
        return
      }
      this.log('delta stream from %s ended - %e', peer, err)
      stream.abort(err as Error)
    }
  }

  /**
   * The deltas `peerId` holds among `keys` (hex key → encoded delta, untrusted). Rejects when the peer is
   * unreachable, does not speak the protocol, or breaks it (struck); the caller then fetches plain chunks.
   */
  async fetch (peerId: PeerId, keys: Uint8Array[], signal?: AbortSignal): Promise<Map<string, Uint8Array>> {
    const out = new Map<string, Uint8Array>()
    for (let i = 0; i < keys.length; i += MAX_DELTA_WANTS) {
      await this.fetchSome(peerId, keys.slice(i, i + MAX_DELTA_WANTS), out, signal)
    }
    return out
  }

  private async fetchSome (peerId: PeerId, keys: Uint8Array[], out: Map<string, Uint8Array>, signal?: AbortSignal): Promise<void> {
    const peer = peerId.toString()
    const deadline = AbortSignal.timeout(this.timeoutMs)
    const s = signal === undefined ? deadline : AbortSignal.any([signal, deadline])
    const stream = await this.components.libp2p.dialProtocol(peerId, [DELTAS_PROTOCOL_2, DELTAS_PROTOCOL], { signal: s })
    const frames = new FrameStream(stream, { maxFrameBytes: MAX_DELTA_FRAME_BYTES, maxBufferBytes: 4 * MAX_DELTA_FRAME_BYTES })
    try {
      await frames.write({ type: 'DELTA_WANT', keys }, s)
      await stream.close({ signal: s })
      let next = 0
      while (next < keys.length) {
        const key = keys[next] as Uint8Array
        const before = frames.bytesRead
        const msg = await frames.read(s)
        this.components.stats?.bytesDown(peer, frames.bytesRead - before)
        if (msg === undefined) throw new ProtocolViolationError(peer, 'delta stream ended before every key was answered')
        if (msg.type === 'ERROR') throw new ProtocolViolationError(peer, `deltas: remote error ${msg.code}`)
        if (msg.type === 'DELTA_NONE') {
          if (msg.count > keys.length - next) throw new ProtocolViolationError(peer, `deltas: DELTA_NONE for ${msg.count} keys, ${keys.length - next} unanswered`)
          next += msg.count
          continue
        }
        const answered = msg.type === 'DELTA' ? msg.key : msg.type === 'DONT_HAVE' ? msg.id : undefined
        if (answered === undefined || toHex(answered) !== toHex(key)) throw new ProtocolViolationError(peer, `deltas: unexpected ${msg.type} frame`)
        if (msg.type === 'DELTA') out.set(toHex(key), msg.bytes)
        next++
      }
    } catch (err) {
      if (err instanceof ProtocolViolationError || err instanceof InvalidMessageError) this.components.onMisbehaviour?.(peer, (err as Error).message)
      stream.abort(err as Error)
      throw err
    }
  }
}
