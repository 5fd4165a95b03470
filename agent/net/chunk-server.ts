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

interface Pending { id: ChunkId, bytes: Promise<Uint8Array | undefined>, settled: boolean, value?: Uint8Array }

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
    const queue: ChunkId[] = []
    let head = 0
    const inFlight: Pending[] = []
    const wake = new Notifier()
    let readerDone = false
    let violation: Error | undefined

    const reader = (async () => {
      try {
        for (;;) {
          const msg = await frames.read()
          if (msg === undefined) break
          if (msg.type !== 'WANT') throw new InvalidMessageError(`unexpected ${msg.type} frame from a client`)
          const unanswered = queue.length - head + inFlight.length + msg.ids.length
          if (unanswered > this.maxOutstanding) {
            violation = new ProtocolViolationError(peer, `${unanswered} unanswered wants, limit ${this.maxOutstanding}`)
            await this.misbehave(peer, frames, 'TOO_MANY_WANTS', violation)
            return
          }
          for (const id of msg.ids) queue.push(id)
          wake.notify()
        }
      } catch (err) {
        if (err instanceof InvalidMessageError) {
          violation = new ProtocolViolationError(peer, (err as Error).message, { cause: err })
          await this.misbehave(peer, frames, 'INVALID_REQUEST', violation)
        } else if (!signal.aborted) {
          this.log.trace('chunk reader for %s ended - %e', peer, err)
        }
      } finally {
        readerDone = true
        wake.notify()
      }
    })()

    // a moving average of the sizes read, starting at a large chunk's (so a stream starts at readAhead)
    let averageSize = 64 * 1024
    const startReads = (): void => {
      const limit = Math.min(MAX_READ_AHEAD, Math.max(this.readAhead, Math.floor(READ_AHEAD_BYTES / averageSize)))
      while (inFlight.length < limit && head < queue.length) {
        const id = queue[head++] as ChunkId
        const pending: Pending = { id, bytes: Promise.resolve(undefined), settled: false }
        // a hole (zeros of a sparse file) is no chunk anyone serves: answered like an unknown one
        const read = isHoleChunk(id) ? Promise.resolve(undefined) : this.components.provider.read(id, signal)
        pending.bytes = read.catch((err: unknown) => {
          this.log.error('provider failed to read %s - %e', toHex(id), err)
          return undefined
        }).then(value => {
          pending.settled = true
          pending.value = value
          if (value !== undefined) averageSize += (value.byteLength - averageSize) / 8
          return value
        })
        inFlight.push(pending)
      }
      if (head > 1024 && head * 2 > queue.length) { queue.splice(0, head); head = 0 }
    }

    try {
      for (;;) {
        startReads()
        const next = inFlight.shift()
        if (next === undefined) {
          if (readerDone || violation !== undefined || signal.aborted) break
          await wake.wait()
          continue
        }
        // with reads running ahead most are done by now: no promise and abort listener for those
        const bytes = next.settled ? next.value : await raceAbort(next.bytes, signal)
        startReads()
        if (violation !== undefined || signal.aborted) break
        if (bytes === undefined) {
          const sent = await this.send(peer, frames, { type: 'DONT_HAVE', id: next.id }, signal)
          this.components.stats?.bytesUp(peer, sent)
        } else if (batched && this.policy.worthTrying(next.id, bytes)) {
          // take the chunks already read that belong in the same batch; never wait for one that is not ready
          const batch = [{ id: next.id, bytes }]
          let raw = bytes.byteLength
          for (;;) {
            const p = inFlight[0]
            if (p === undefined || !p.settled || p.value === undefined || !this.policy.fits(batch.length, raw, p.value.byteLength)) break
            if (!this.policy.worthTrying(p.id, p.value)) break
            inFlight.shift()
            batch.push({ id: p.id, bytes: p.value })
            raw += p.value.byteLength
          }
          startReads()
          await this.sendAll(peer, frames, this.policy.pack(batch), signal)
        } else {
          // take the chunks already read that also go out plain; never wait for one that is not ready
          const plain: BlockMessage[] = [{ type: 'BLOCK', id: next.id, bytes }]
          let size = bytes.byteLength
          for (;;) {
            const p = inFlight[0]
            if (p === undefined || !p.settled || p.value === undefined || size + p.value.byteLength > COALESCE_BYTES) break
            if (batched && this.policy.worthTrying(p.id, p.value)) break
            inFlight.shift()
            plain.push({ type: 'BLOCK', id: p.id, bytes: p.value })
            size += p.value.byteLength
          }
          startReads()
          await this.sendAll(peer, frames, plain, signal)
        }
      }
    } finally {
      // stop the reader too: a writer failure (peer gone) leaves nothing to serve
      if (!readerDone) frames.stream.abort(new Error('chunk writer stopped'))
      await reader
    }
    if (violation === undefined && !signal.aborted) await frames.stream.close()
  }

  /**
   * Frames with chunks, written as one piece (see COALESCE_BYTES) after pacing their total wire size; each
   * is counted as served on its own.
   */
  private async sendAll (peer: string, frames: FrameStream, msgs: Array<BlockMessage | BlocksMessage>, signal: AbortSignal): Promise<void> {
    const encoded = msgs.map(m => frames.encode(m))
    const one = joinFrames(encoded)
    if (this.components.provider.pace !== undefined) await this.components.provider.pace(peer, one.frame.byteLength, signal)
    await frames.writeEncoded(one, signal)
    msgs.forEach((m, i) => {
      this.components.stats?.served(peer, (encoded[i] as EncodedFrame).payloadBytes, m.type === 'BLOCKS' ? m.entries.reduce((t, e) => t + e.size, 0) : m.bytes.byteLength)
    })
  }

  /** Paces by the frame's wire size (length prefix included), then writes it. */
  private async send (peer: string, frames: FrameStream, msg: Message, signal: AbortSignal): Promise<number> {
    const encoded = frames.encode(msg)
    if (this.components.provider.pace !== undefined) await this.components.provider.pace(peer, encoded.frame.byteLength, signal)
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
