// Serving side of /deltamesh/chunks/1.0.0: reads WANT frames, answers every id with BLOCK or DONT_HAVE.
// Storage is behind ChunkProvider; per-stream queues and per-peer stream counts are bounded.
import type { Connection, Libp2p, PeerId, Stream } from '@libp2p/interface'
import { CHUNKS_PROTOCOL } from '../../protocol/ids.js'
import { InvalidMessageError } from '../../protocol/errors.js'
import { toHex, type ChunkId } from '../../protocol/chunk-id.js'
import {
  MAX_INBOUND_CHUNK_STREAMS_PER_PEER, MAX_OUTSTANDING_WANTS, MAX_REQUEST_FRAME_BYTES,
} from '../../protocol/wire-limits.js'
import { FrameStream, Notifier } from './frames.js'
import { ProtocolViolationError } from './errors.js'
import type { MisbehaviourHandler, PeerStats } from './peer-stats.js'

/**
 * What the server needs from storage: the verified bytes of a chunk, or undefined when not held. It may
 * also hold the answer back (upload pacing for `peer`): the writer sends blocks in the order asked.
 */
export interface ChunkProvider {
  read (id: ChunkId, signal: AbortSignal, peer: string): Promise<Uint8Array | undefined>
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
  /** Provider reads running ahead of the writer on one stream (hides disk latency). */
  readAhead?: number
}

export const DEFAULT_READ_AHEAD = 8

interface Pending { id: ChunkId, bytes: Promise<Uint8Array | undefined> }

export class ChunkServer {
  private readonly log
  private readonly maxOutstanding: number
  private readonly maxStreamsPerPeer: number
  private readonly readAhead: number
  private readonly streamsPerPeer = new Map<string, number>()
  private readonly active = new Set<{ stream: Stream, controller: AbortController }>()
  private running = false

  constructor (private readonly components: ChunkServerComponents, init: ChunkServerInit = {}) {
    this.log = components.libp2p.logger.forComponent('deltamesh:chunk-server')
    this.maxOutstanding = init.maxOutstandingWants ?? MAX_OUTSTANDING_WANTS
    this.maxStreamsPerPeer = init.maxStreamsPerPeer ?? MAX_INBOUND_CHUNK_STREAMS_PER_PEER
    this.readAhead = init.readAhead ?? DEFAULT_READ_AHEAD
  }

  /** Inbound chunk streams being served right now. */
  get activeStreams (): number {
    return this.active.size
  }

  async start (): Promise<void> {
    if (this.running) return
    await this.components.libp2p.handle(CHUNKS_PROTOCOL, (stream, connection) => this.handle(stream, connection), {
      // libp2p's own cap is per connection; ours (below) is per peer across connections
      maxInboundStreams: this.maxStreamsPerPeer,
    })
    this.running = true
  }

  async stop (): Promise<void> {
    if (!this.running) return
    this.running = false
    await this.components.libp2p.unhandle(CHUNKS_PROTOCOL)
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
    this.active.add(entry)
    // a reset or closed stream cancels the provider reads still running for it
    stream.addEventListener('close', () => entry.controller.abort(), { once: true })
    try {
      if (count > this.maxStreamsPerPeer) {
        this.log('refusing chunk stream %d from %p', count, peerId)
        await frames.abortWithError('BUSY', `at most ${this.maxStreamsPerPeer} chunk streams per peer`, new Error('too many streams'))
        return
      }
      await this.serve(peer, frames, entry.controller.signal)
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
  private async serve (peer: string, frames: FrameStream, signal: AbortSignal): Promise<void> {
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

    const startReads = (): void => {
      while (inFlight.length < this.readAhead && head < queue.length) {
        const id = queue[head++] as ChunkId
        const bytes = this.components.provider.read(id, signal, peer).catch((err: unknown) => {
          this.log.error('provider failed to read %s - %e', toHex(id), err)
          return undefined
        })
        inFlight.push({ id, bytes })
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
        const bytes = await raceAbort(next.bytes, signal)
        startReads()
        if (violation !== undefined || signal.aborted) break
        if (bytes === undefined) {
          const sent = await frames.write({ type: 'DONT_HAVE', id: next.id })
          this.components.stats?.bytesUp(peer, sent)
        } else {
          const n = await frames.write({ type: 'BLOCK', id: next.id, bytes })
          this.components.stats?.served(peer, n, bytes.byteLength)
        }
      }
    } finally {
      // stop the reader too: a writer failure (peer gone) leaves nothing to serve
      if (!readerDone) frames.stream.abort(new Error('chunk writer stopped'))
      await reader
    }
    if (violation === undefined && !signal.aborted) await frames.stream.close()
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
