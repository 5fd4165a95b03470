// Serving side of /deltamesh/chunks/1.0.0 and 1.1.0: reads WANT frames, answers every id with BLOCK or
// DONT_HAVE, and on 1.1.0 sends compressible chunks that are ready together as one compressed BLOCKS frame.
// Storage is behind ChunkProvider; per-stream queues and per-peer stream counts are bounded.
import { setMaxListeners } from 'node:events'
import type { Connection, Libp2p, PeerId, Stream } from '@libp2p/interface'
import { CHUNKS_PROTOCOL, CHUNKS_PROTOCOL_1_1 } from '../../protocol/ids.js'
import { InvalidMessageError } from '../../protocol/errors.js'
import { toHex, type ChunkId } from '../../protocol/chunk-id.js'
import { isHoleChunk } from '../../protocol/manifest.js'
import { MAX_INBOUND_CHUNK_STREAMS_PER_PEER, MAX_OUTSTANDING_WANTS, MAX_REQUEST_FRAME_BYTES } from '../../protocol/wire-limits.js'
import { FrameStream, Notifier, type EncodedFrame } from './frames.js'
import { joinFrames } from '../../protocol/frame-encode.js'
import { CompressionPolicy } from './compression-policy.js'
import type { BlockMessage, BlocksMessage, Message } from '../../protocol/messages.js'
import { ProtocolViolationError } from './errors.js'
import type { MisbehaviourHandler, PeerStats } from './peer-stats.js'

/** What the server needs from storage: the verified bytes of a chunk, or undefined when not held. */
export interface ChunkProvider {
  read (id: ChunkId, signal: AbortSignal): Promise<Uint8Array | undefined>
  /**
   * Holds each frame back until `peer`'s upload limits allow `bytes` more (upload pacing). Called with the
   * size of the frame as it crosses the wire (compressed when it is), so a limit caps real bytes.
   */
  pace? (peer: string, bytes: number, signal: AbortSignal): Promise<void>
}

export interface ChunkServerComponents {
  libp2p: Pick<Libp2p, 'handle' | 'unhandle' | 'logger'>
  provider: ChunkProvider
  /** Checked again per stream: a peer removed from the list at runtime is refused even on an old connection. */
  allowlist?: { has (peer: PeerId): boolean }
  stats?: PeerStats
  onMisbehaviour?: MisbehaviourHandler
}

export interface ChunkServerInit {
  maxOutstandingWants?: number
  maxStreamsPerPeer?: number
  /** Provider reads running ahead of the writer on one stream (hides disk latency, and fills batches). */
  readAhead?: number
  /** Raw bytes gathered into one BLOCKS frame at most (≤ MAX_BATCH_RAW_BYTES). */
  batchBytes?: number
  /** Serve /deltamesh/chunks/1.1.0 (compressed batches). Off: only 1.0.0, for tests of old peers. */
  compression?: boolean
}

export const DEFAULT_READ_AHEAD = 16
/**
 * Small chunks get more reads ahead, up to this many bytes' worth (by the sizes read so far on the stream)
 * and MAX_READ_AHEAD of them: a batch only takes chunks already read, so with 16 reads of 4 KiB files in
 * flight a BLOCKS frame carried 16 chunks, and every chunk of a small-file tree paid a sixteenth of a
 * frame's sending (msgpack, yamux, Noise, a socket write) and of a brotli call.
 */
export const READ_AHEAD_BYTES = 1024 * 1024
export const MAX_READ_AHEAD = 64
/** A batch large enough for brotli to find repeats across chunks, small enough not to delay the first chunk. */
export const DEFAULT_BATCH_BYTES = 256 * 1024
/**
 * Plain BLOCK frames of chunks already read are written together up to this many bytes: one muxer frame, one
 * Noise message and one yamux window update at the receiver for many small chunks instead of one each (a
 * tree of 4 KiB files paid all three per chunk, on both sides). yamux cuts its frames at 64 KiB anyway.
 */
export const COALESCE_BYTES = 64 * 1024

export class ChunkServer {
  private readonly log
  private readonly maxOutstanding: number
  private readonly maxStreamsPerPeer: number
  private readonly readAhead: number
  private readonly compression: boolean
  private readonly policy: CompressionPolicy
  private readonly streamsPerPeer = new Map<string, number>()
  private readonly active = new Set<{ stream: Stream, controller: AbortController }>()
  private running = false

  constructor (private readonly components: ChunkServerComponents, init: ChunkServerInit = {}) {
    this.log = components.libp2p.logger.forComponent('deltamesh:chunk-server')
    this.maxOutstanding = init.maxOutstandingWants ?? MAX_OUTSTANDING_WANTS
    this.maxStreamsPerPeer = init.maxStreamsPerPeer ?? MAX_INBOUND_CHUNK_STREAMS_PER_PEER
    this.readAhead = init.readAhead ?? DEFAULT_READ_AHEAD
    this.compression = init.compression ?? true
    this.policy = new CompressionPolicy({ batchBytes: init.batchBytes ?? DEFAULT_BATCH_BYTES })
  }

  /** Compression counters (raw bytes in, compressed bytes out, chunks sent plain because they do not shrink). */
  get compressionStats (): CompressionPolicy['stats'] { return this.policy.stats }

  private get protocols (): string[] {
    return this.compression ? [CHUNKS_PROTOCOL_1_1, CHUNKS_PROTOCOL] : [CHUNKS_PROTOCOL]
  }

  /** Inbound chunk streams being served right now. */
  get activeStreams (): number {
    return this.active.size
  }

  async start (): Promise<void> {
    if (this.running) return
    for (const protocol of this.protocols) {
      await this.components.libp2p.handle(protocol, (stream, connection) => this.handle(stream, connection), {
        // libp2p's own cap is per connection; ours (below) is per peer across connections
        maxInboundStreams: this.maxStreamsPerPeer,
      })
    }
    this.running = true
  }

  async stop (): Promise<void> {
    if (!this.running) return
    this.running = false
    for (const protocol of this.protocols) await this.components.libp2p.unhandle(protocol)
    for (const a of this.active) {
      a.controller.abort()
      a.stream.abort(new Error('chunk server stopping'))
    }
    this.active.clear()
  }

  private async handle (stream: Stream, connection: Connection): Promise<void> {
    const peerId = connection.remotePeer
    const peer = peerId.toString()
    if (!this.running || (this.components.allowlist !== undefined && !this.components.allowlist.has(peerId))) {
      stream.abort(new Error('not serving this peer'))
      return
    }
    const frames = new FrameStream(stream, {
      maxFrameBytes: MAX_REQUEST_FRAME_BYTES,
      // a well-behaved client never has more than maxOutstanding ids unanswered: that many ids of buffered frames
      maxBufferBytes: MAX_REQUEST_FRAME_BYTES * 4,
    })
    const count = (this.streamsPerPeer.get(peer) ?? 0) + 1
    this.streamsPerPeer.set(peer, count)
    const entry = { stream, controller: new AbortController() }
    // every read in flight on the stream gets this signal, and a provider may listen on it for each (a relay
    // does): up to MAX_READ_AHEAD at once, plus the writer's own wait, is expected, not a leak
    setMaxListeners(MAX_READ_AHEAD + 4, entry.controller.signal)
    this.active.add(entry)
    // a reset or closed stream cancels the provider reads still running for it
    stream.addEventListener('close', () => entry.controller.abort(), { once: true })
    try {
      if (count > this.maxStreamsPerPeer) {
        this.log('refusing chunk stream %d from %p', count, peerId)
        await frames.abortWithError('BUSY', `at most ${this.maxStreamsPerPeer} chunk streams per peer`, new Error('too many streams'))
        return
      }
      await this.serve(peer, frames, entry.controller.signal, stream.protocol === CHUNKS_PROTOCOL_1_1)
    } catch (err) {
      this.log('chunk stream from %p ended - %e', peerId, err)
      entry.controller.abort()
      stream.abort(err as Error)
    } finally {
      entry.controller.abort()
      this.active.delete(entry)
      const left = (this.streamsPerPeer.get(peer) ?? 1) - 1
      if (left <= 0) this.streamsPerPeer.delete(peer)
      else this.streamsPerPeer.set(peer, left)
    }
  }

  /** Runs a reader (WANT frames → queue) and a writer (queue → provider → BLOCK/DONT_HAVE) until the client closes. */
  private async serve (peer: string, frames: FrameStream, signal: AbortSignal, batched: boolean): Promise<void> {
    const wants = new ReadAhead(id => this.readChunk(id, signal), this.readAhead)
    const wake = new Notifier()
    const reading: ReaderState = { done: false, violation: undefined }
    const reader = this.readWants(peer, frames, wants, wake, reading, signal)
    try {
      for (;;) {
        wants.fill()
        const next = wants.next()
        if (next === undefined) {
          if (reading.done || reading.violation !== undefined || signal.aborted) break
          await wake.wait()
          continue
        }
        // with reads running ahead most are done by now: no promise and abort listener for those
        const bytes = next.settled ? next.value : await raceAbort(next.bytes, signal)
        wants.fill()
        if (reading.violation !== undefined || signal.aborted) break
        if (bytes === undefined) {
          const sent = await this.send(peer, frames, { type: 'DONT_HAVE', id: next.id }, signal)
          this.components.stats?.bytesUp(peer, sent)
        } else if (batched && this.policy.worthTrying(next.id, bytes)) {
          await this.sendBatch(peer, frames, wants, { id: next.id, bytes }, signal)
        } else {
          await this.sendPlain(peer, frames, wants, { id: next.id, bytes }, batched, signal)
        }
      }
    } finally {
      // stop the reader too: a writer failure (peer gone) leaves nothing to serve
      if (!reading.done) frames.stream.abort(new Error('chunk writer stopped'))
      await reader
    }
    if (reading.violation === undefined && !signal.aborted) await frames.stream.close()
  }

  /**
   * The reader: queues the ids of each WANT frame until the client closes its side. Too many unanswered
   * wants, or a frame that is not a valid WANT, is a violation: the stream ends with an ERROR and a strike.
   */
  private async readWants (peer: string, frames: FrameStream, wants: ReadAhead, wake: Notifier, reading: ReaderState, signal: AbortSignal): Promise<void> {
    try {
      for (;;) {
        const msg = await frames.read()
        if (msg === undefined) break
        if (msg.type !== 'WANT') throw new InvalidMessageError(`unexpected ${msg.type} frame from a client`)
        const unanswered = wants.unanswered + msg.ids.length
        if (unanswered > this.maxOutstanding) {
          reading.violation = new ProtocolViolationError(peer, `${unanswered} unanswered wants, limit ${this.maxOutstanding}`)
          await this.misbehave(peer, frames, 'TOO_MANY_WANTS', reading.violation)
          return
        }
        wants.want(msg.ids)
        wake.notify()
      }
    } catch (err) {
      if (err instanceof InvalidMessageError) {
        reading.violation = new ProtocolViolationError(peer, (err as Error).message, { cause: err })
        await this.misbehave(peer, frames, 'INVALID_REQUEST', reading.violation)
      } else if (!signal.aborted) {
        this.log.trace('chunk reader for %s ended - %e', peer, err)
      }
    } finally {
      reading.done = true
      wake.notify()
    }
  }

  /** One provider read; a provider failure is logged and answered like a chunk not held. */
  private readChunk (id: ChunkId, signal: AbortSignal): Promise<Uint8Array | undefined> {
    // a hole (zeros of a sparse file) is no chunk anyone serves: answered like an unknown one
    const read = isHoleChunk(id) ? Promise.resolve(undefined) : this.components.provider.read(id, signal)
    return read.catch((err: unknown) => {
      this.log.error('provider failed to read %s - %e', toHex(id), err)
      return undefined
    })
  }

  /** A compressed batch: `first` and the chunks after it already read that belong in the same batch. */
  private async sendBatch (peer: string, frames: FrameStream, wants: ReadAhead, first: ReadChunk, signal: AbortSignal): Promise<void> {
    const batch = [first]
    let raw = first.bytes.byteLength
    for (;;) {
      const taken = wants.takeReady((id, bytes) => this.policy.fits(batch.length, raw, bytes.byteLength) && this.policy.worthTrying(id, bytes))
      if (taken === undefined) break
      batch.push(taken)
      raw += taken.bytes.byteLength
    }
    wants.fill()
    await this.sendAll(peer, frames, this.policy.pack(batch), signal)
  }

  /** Plain BLOCK frames: `first` and the chunks after it already read that also go out plain, up to COALESCE_BYTES. */
  private async sendPlain (peer: string, frames: FrameStream, wants: ReadAhead, first: ReadChunk, batched: boolean, signal: AbortSignal): Promise<void> {
    const plain: BlockMessage[] = [{ type: 'BLOCK', id: first.id, bytes: first.bytes }]
    let size = first.bytes.byteLength
    for (;;) {
      const taken = wants.takeReady((id, bytes) => size + bytes.byteLength <= COALESCE_BYTES && !(batched && this.policy.worthTrying(id, bytes)))
      if (taken === undefined) break
      plain.push({ type: 'BLOCK', id: taken.id, bytes: taken.bytes })
      size += taken.bytes.byteLength
    }
    wants.fill()
    await this.sendAll(peer, frames, plain, signal)
  }

  /**
   * Frames with chunks, written as one piece (see COALESCE_BYTES) after pacing their total wire size; each
   * is counted as served on its own.
   */
  private async sendAll (peer: string, frames: FrameStream, msgs: Array<BlockMessage | BlocksMessage>, signal: AbortSignal): Promise<void> {
    const encoded = msgs.map(m => frames.encode(m))
    const one = joinFrames(encoded)
    if (this.components.provider.pace !== undefined) await this.components.provider.pace(peer, one.wireBytes, signal)
    await frames.writeEncoded(one, signal)
    msgs.forEach((m, i) => {
      this.components.stats?.served(peer, (encoded[i] as EncodedFrame).payloadBytes, m.type === 'BLOCKS' ? m.entries.reduce((t, e) => t + e.size, 0) : m.bytes.byteLength, m.type === 'BLOCKS' ? m.entries.length : 1)
    })
  }

  /** Paces by the frame's wire size (length prefix included), then writes it. */
  private async send (peer: string, frames: FrameStream, msg: Message, signal: AbortSignal): Promise<number> {
    const encoded = frames.encode(msg)
    if (this.components.provider.pace !== undefined) await this.components.provider.pace(peer, encoded.wireBytes, signal)
    return await frames.writeEncoded(encoded, signal)
  }

  private async misbehave (peer: string, frames: FrameStream, code: 'TOO_MANY_WANTS' | 'INVALID_REQUEST', err: Error): Promise<void> {
    this.log('peer %s misbehaved on the chunk stream: %s', peer, err.message)
    this.components.onMisbehaviour?.(peer, err.message)
    await frames.abortWithError(code, err.message, err)
  }
}

/** Resolves like `promise`, or rejects as soon as `signal` aborts (a provider that ignores its signal cannot pin a stream). */
async function raceAbort<T> (promise: Promise<T>, signal: AbortSignal): Promise<T> {
  signal.throwIfAborted()
  let onAbort!: () => void
  const aborted = new Promise<never>((_resolve, reject) => {
    onAbort = () => reject(signal.reason)
    signal.addEventListener('abort', onAbort, { once: true })
  })
  try {
    return await Promise.race([promise, aborted])
  } finally {
    signal.removeEventListener('abort', onAbort)
  }
}

/** What the reader of a stream tells its writer: the client is done asking, or broke the protocol. */
interface ReaderState { done: boolean, violation: Error | undefined }

interface ReadChunk { id: ChunkId, bytes: Uint8Array }

interface Pending { id: ChunkId, bytes: Promise<Uint8Array | undefined>, settled: boolean, value?: Uint8Array }

/**
 * One stream's wants, answered in the order they came: the ids waiting for a read, and the provider reads
 * running ahead of the writer (more of them for small chunks, see READ_AHEAD_BYTES). The writer takes reads
 * in order; it may take the next ones too when they are already done (a batch never waits for a read).
 */
class ReadAhead {
  private readonly queue: ChunkId[] = []
  private head = 0
  private readonly inFlight: Pending[] = []
  // a moving average of the sizes read, starting at a large chunk's (so a stream starts at readAhead)
  private averageSize = 64 * 1024

  constructor (private readonly read: (id: ChunkId) => Promise<Uint8Array | undefined>, private readonly readAhead: number) {}

  /** Ids wanted and not answered yet: waiting, or being read. */
  get unanswered (): number { return this.queue.length - this.head + this.inFlight.length }

  want (ids: ChunkId[]): void { for (const id of ids) this.queue.push(id) }

  /** Starts reads of waiting ids, up to the read-ahead limit for the sizes seen so far. */
  fill (): void {
    const limit = Math.min(MAX_READ_AHEAD, Math.max(this.readAhead, Math.floor(READ_AHEAD_BYTES / this.averageSize)))
    while (this.inFlight.length < limit && this.head < this.queue.length) {
      const id = this.queue[this.head++] as ChunkId
      const pending: Pending = { id, bytes: Promise.resolve(undefined), settled: false }
      pending.bytes = this.read(id).then(value => {
        pending.settled = true
        pending.value = value
        if (value !== undefined) this.averageSize += (value.byteLength - this.averageSize) / 8
        return value
      })
      this.inFlight.push(pending)
    }
    if (this.head > 1024 && this.head * 2 > this.queue.length) { this.queue.splice(0, this.head); this.head = 0 }
  }

  /** The oldest read, done or not; undefined when none is running. */
  next (): Pending | undefined { return this.inFlight.shift() }

  /** The oldest read if it is done, found the chunk, and `accept` takes it; else undefined (never waits). */
  takeReady (accept: (id: ChunkId, bytes: Uint8Array) => boolean): ReadChunk | undefined {
    const p = this.inFlight[0]
    if (p === undefined || !p.settled || p.value === undefined || !accept(p.id, p.value)) return undefined
    this.inFlight.shift()
    return { id: p.id, bytes: p.value }
  }
}
