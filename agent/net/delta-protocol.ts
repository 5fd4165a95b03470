// /deltamesh/deltas/1.0.0: one request per stream. The client sends DELTA_WANT (keys); the server answers
// each key with DELTA or DONT_HAVE, in order, then closes. A peer that does not speak it (an older agent)
// fails the dial, and the caller fetches plain chunks: deltas only ever save bytes, never decide content.
import type { Connection, Libp2p, PeerId, Stream } from '@libp2p/interface'
import { DELTAS_PROTOCOL } from '../../protocol/ids.js'
import { toHex } from '../../protocol/chunk-id.js'
import { InvalidMessageError } from '../../protocol/errors.js'
import { MAX_DELTA_FRAME_BYTES, MAX_DELTA_WANTS, MAX_REQUEST_FRAME_BYTES } from '../../protocol/wire-limits.js'
import { FrameStream } from './frames.js'
import { ProtocolViolationError } from './errors.js'
import type { MisbehaviourHandler, PeerStats } from './peer-stats.js'

export interface DeltaProvider {
  get (key: Uint8Array, signal: AbortSignal): Promise<Uint8Array | undefined>
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
    await this.components.libp2p.handle(DELTAS_PROTOCOL, (stream, connection) => this.serve(stream, connection), { maxInboundStreams: MAX_INBOUND_DELTA_STREAMS })
    this.running = true
  }

  async stop (): Promise<void> {
    if (!this.running) return
    this.running = false
    await this.components.libp2p.unhandle(DELTAS_PROTOCOL)
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
      for (const key of msg.keys) {
        const bytes = await this.components.provider.get(key, signal)
        const encoded = frames.encode(bytes === undefined ? { type: 'DONT_HAVE', id: key } : { type: 'DELTA', key, bytes })
        await this.components.provider.pace?.(peer, encoded.frame.byteLength, signal)
        const n = await frames.writeEncoded(encoded, signal)
        this.components.stats?.bytesUp(peer, n)
      }
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
    const stream = await this.components.libp2p.dialProtocol(peerId, DELTAS_PROTOCOL, { signal: s })
    const frames = new FrameStream(stream, { maxFrameBytes: MAX_DELTA_FRAME_BYTES, maxBufferBytes: 4 * MAX_DELTA_FRAME_BYTES })
    try {
      await frames.write({ type: 'DELTA_WANT', keys }, s)
      await stream.close({ signal: s })
      for (const key of keys) {
        const before = frames.bytesRead
        const msg = await frames.read(s)
        this.components.stats?.bytesDown(peer, frames.bytesRead - before)
        if (msg === undefined) throw new ProtocolViolationError(peer, 'delta stream ended before every key was answered')
        if (msg.type === 'ERROR') throw new ProtocolViolationError(peer, `deltas: remote error ${msg.code}`)
        const answered = msg.type === 'DELTA' ? msg.key : msg.type === 'DONT_HAVE' ? msg.id : undefined
        if (answered === undefined || toHex(answered) !== toHex(key)) throw new ProtocolViolationError(peer, `deltas: unexpected ${msg.type} frame`)
        if (msg.type === 'DELTA') out.set(toHex(key), msg.bytes)
      }
    } catch (err) {
      if (err instanceof ProtocolViolationError || err instanceof InvalidMessageError) this.components.onMisbehaviour?.(peer, (err as Error).message)
      stream.abort(err as Error)
      throw err
    }
  }
}
