// Fetching side of /deltamesh/chunks/1.1.0 (1.0.0 with an older server): one long-lived stream per peer,
// WANT frames pipelined within a bounded window, every chunk (of a BLOCK, or inflated from a BLOCKS batch
// within its declared size) hashed before delivery. Failures are results (per id), so the caller can ask
// another peer; fetch() itself only rejects for bad arguments.
import type { Libp2p, PeerId } from '@libp2p/interface'
import { CHUNKS_PROTOCOL, CHUNKS_PROTOCOL_1_1 } from '../../protocol/ids.js'
import { decompressBatch } from '../../protocol/batch-codec.js'
import { ChunkHashMismatchError, DeltameshError, InvalidMessageError } from '../../protocol/errors.js'
import { isChunkId, toHex, verifyReceivedChunk, type ChunkId } from '../../protocol/chunk-id.js'
import type { ChunkRef } from '../../protocol/manifest.js'
import { MAX_FRAME_BYTES, MAX_FRAME_BYTES_1_1, MAX_OUTSTANDING_WANTS, MAX_WANTS_PER_FRAME } from '../../protocol/wire-limits.js'
import { FrameStream } from './frames.js'
import { PeerDisconnectedError, PeerStalledError, PeerUnreachableError, ProtocolViolationError, RemoteError } from './errors.js'
import { BAD_CHUNK_STRIKES, type MisbehaviourHandler, type PeerStats } from './peer-stats.js'
import type { BlocksMessage, Message } from '../../protocol/messages.js'

/** Bytes asked for and not yet delivered, per peer: 16 MiB keeps a 1 Gbit/s × 100 ms link full. */
export const DEFAULT_MAX_OUTSTANDING_BYTES = 16 * 1024 * 1024
/** Ids asked for and not yet answered, per peer (the server's limit is MAX_OUTSTANDING_WANTS). */
export const DEFAULT_MAX_OUTSTANDING_CHUNKS = 1024
/** A peer that sends no frame for this long while we wait for answers is treated as gone. */
export const DEFAULT_STALL_TIMEOUT_MS = 30_000
/** Opening the stream (multistream-select over an existing or new connection). */
export const DEFAULT_OPEN_TIMEOUT_MS = 10_000


export type FetchFailureReason =
  'dont-have' | 'hash-mismatch' | 'stalled' | 'disconnected' | 'unreachable' | 'remote-error' | 'protocol-error' | 'aborted' | 'consumer-error'

export interface FetchFailure { id: ChunkId, reason: FetchFailureReason, error?: Error }

export interface FetchResult {
  delivered: number
  bytes: number
  /**
   * Frame bytes the delivered chunks cost on the wire (a BLOCKS frame's bytes shared by its chunks' sizes);
   * below `bytes` when they came compressed. Receiver pacing refunds the difference.
   */
  wireBytes?: number
  failed: FetchFailure[]
}

export interface FetchOptions {
  signal?: AbortSignal
  /** Called once per verified chunk, one call at a time per fetch; its promise holds the window open. */
  onBlock: (id: ChunkId, bytes: Uint8Array) => void | Promise<void>
  /** Called as each id fails (the same failures are also in the result). */
  onFailure?: (failure: FetchFailure) => void
}

export interface ChunkClientComponents {
  libp2p: Pick<Libp2p, 'dialProtocol' | 'logger'>
  stats?: PeerStats
  onMisbehaviour?: MisbehaviourHandler
}

export interface ChunkClientInit {
  maxOutstandingBytes?: number
  maxOutstandingChunks?: number
  stallTimeoutMs?: number
  openTimeoutMs?: number
}

/** One fetch() call. */
class Call {
  remaining: number
  done = false
  chain: Promise<void> = Promise.resolve()
  readonly result: FetchResult & { wireBytes: number } = { delivered: 0, bytes: 0, wireBytes: 0, failed: [] }
  readonly finished: Promise<FetchResult>
  private resolve!: (r: FetchResult) => void

  constructor (count: number, readonly options: FetchOptions) {
    this.remaining = count
    this.finished = new Promise(resolve => { this.resolve = resolve })
  }

  fail (id: ChunkId, reason: FetchFailureReason, error?: Error): void {
    if (this.done) return
    const failure: FetchFailure = { id, reason, error }
    this.result.failed.push(failure)
    try {
      this.options.onFailure?.(failure)
    } catch {
      // a throwing observer must not break the accounting; the failure is in the result anyway
    }
    this.settleOne()
  }

  settleOne (): void {
    if (--this.remaining === 0) this.finish()
  }

  finish (): void {
    if (this.done) return
    this.done = true
    // deliveries already started complete first, so the result counts them
    this.chain.then(() => this.resolve(this.result), () => this.resolve(this.result))
  }
}

/** One id asked of one peer; several calls may wait for it. */
interface Want { id: ChunkId, hex: string, size: number, calls: Call[], sent: boolean }

class Session {
  readonly wants = new Map<string, Want>()
  queue: Want[] = []
  outstandingChunks = 0
  outstandingBytes = 0
  /** Bytes verified but still inside an onBlock call. */
  deliveringBytes = 0
  lastActivity = Date.now()
  closed = false
  writing = false
  stallTimer?: ReturnType<typeof setTimeout>

  /** The server speaks 1.1.0: BLOCKS frames are expected; on 1.0.0 one is a protocol violation. */
  constructor (readonly peer: string, readonly frames: FrameStream, readonly batched: boolean) {}
}

export class ChunkClient {
  private readonly log
  private readonly sessions = new Map<string, Session | Promise<Session>>()
  private readonly maxBytes: number
  private readonly maxChunks: number
  private readonly stallMs: number
  private readonly openMs: number
  private running = true

  constructor (private readonly components: ChunkClientComponents, init: ChunkClientInit = {}) {
    this.log = components.libp2p.logger.forComponent('deltamesh:chunk-client')
    this.maxBytes = init.maxOutstandingBytes ?? DEFAULT_MAX_OUTSTANDING_BYTES
    this.maxChunks = Math.min(init.maxOutstandingChunks ?? DEFAULT_MAX_OUTSTANDING_CHUNKS, MAX_OUTSTANDING_WANTS)
    this.stallMs = init.stallTimeoutMs ?? DEFAULT_STALL_TIMEOUT_MS
    this.openMs = init.openTimeoutMs ?? DEFAULT_OPEN_TIMEOUT_MS
  }

  async start (): Promise<void> { this.running = true }

  /** Closes every session; outstanding ids fail as 'aborted'. */
  async stop (): Promise<void> {
    this.running = false
    for (const s of [...this.sessions.values()]) {
      const session = await Promise.resolve(s).catch(() => undefined)
      if (session !== undefined) this.failSession(session, 'aborted', new DeltameshError('chunk client stopped'))
    }
    this.sessions.clear()
  }

  /** Fetches `wants` from one peer. Every id ends in exactly one onBlock call or one failure. */
  async fetch (peerId: PeerId, wants: ChunkRef[], options: FetchOptions): Promise<FetchResult> {
    for (const w of wants) {
      if (!isChunkId(w.id) || !Number.isSafeInteger(w.size) || w.size < 0) throw new TypeError('fetch: every want needs a 32-byte id and a size')
    }
    const call = new Call(wants.length, options)
    if (wants.length === 0) { call.finish(); return await call.finished }
    const signal = options.signal
    if (signal?.aborted === true || !this.running) {
      for (const w of wants) call.fail(w.id, 'aborted', signal?.reason as Error | undefined)
      return await call.finished
    }
    let session: Session
    try {
      session = await this.session(peerId, signal)
    } catch (err) {
      const reason: FetchFailureReason = Boolean(signal?.aborted) ? 'aborted' : 'unreachable'
      const error = reason === 'unreachable' ? new PeerUnreachableError(peerId.toString(), { cause: err }) : err as Error
      for (const w of wants) call.fail(w.id, reason, error)
      return await call.finished
    }
    const onAbort = (): void => this.abortCall(session, call, wants)
    signal?.addEventListener('abort', onAbort, { once: true })
    try {
      for (const w of wants) this.enqueue(session, w, call)
      this.pump(session)
      return await call.finished
    } finally {
      signal?.removeEventListener('abort', onAbort)
    }
  }

  private async session (peerId: PeerId, signal?: AbortSignal): Promise<Session> {
    const key = peerId.toString()
    const existing = this.sessions.get(key)
    if (existing !== undefined) return await existing
    const opening = (async () => {
      const openSignal = signal === undefined ? AbortSignal.timeout(this.openMs) : AbortSignal.any([signal, AbortSignal.timeout(this.openMs)])
      // 1.1.0 first; multistream-select falls back to 1.0.0 with a server that does not know it
      const stream = await this.components.libp2p.dialProtocol(peerId, [CHUNKS_PROTOCOL_1_1, CHUNKS_PROTOCOL], { signal: openSignal })
      const batched = stream.protocol === CHUNKS_PROTOCOL_1_1
      const maxFrame = batched ? MAX_FRAME_BYTES_1_1 : MAX_FRAME_BYTES
      const frames = new FrameStream(stream, {
        maxFrameBytes: maxFrame,
        // an honest server sends at most our window (plus one oversized frame) before we read it
        maxBufferBytes: this.maxBytes + 2 * maxFrame,
      })
      const session = new Session(key, frames, batched)
      this.sessions.set(key, session)
      this.readLoop(session).catch(err => this.log.error('read loop for %s failed - %e', key, err))
      return session
    })()
    this.sessions.set(key, opening)
    opening.catch(() => { if (this.sessions.get(key) === opening) this.sessions.delete(key) })
    return await opening
  }

  private enqueue (session: Session, w: ChunkRef, call: Call): void {
    const hex = toHex(w.id)
    const existing = session.wants.get(hex)
    if (existing !== undefined) { existing.calls.push(call); return }
    const want: Want = { id: w.id, hex, size: w.size, calls: [call], sent: false }
    session.wants.set(hex, want)
    session.queue.push(want)
  }

  private abortCall (session: Session, call: Call, wants: ChunkRef[]): void {
    const error = new DeltameshError('fetch aborted')
    for (const w of wants) {
      const want = session.wants.get(toHex(w.id))
      const i = want?.calls.indexOf(call) ?? -1
      if (want === undefined || i < 0) continue
      want.calls.splice(i, 1)
      // an unsent want nobody waits for is dropped; a sent one stays until answered (so its BLOCK is expected)
      if (want.calls.length === 0 && !want.sent) session.wants.delete(want.hex)
      call.fail(w.id, 'aborted', error)
    }
    session.queue = session.queue.filter(q => q.calls.length > 0 || q.sent)
  }

  /** Sends WANT frames while the window has room. One writer per session at a time. */
  private pump (session: Session): void {
    if (session.writing || session.closed) return
    session.writing = true
    this.pumpLoop(session).catch(err => this.failSession(session, 'disconnected', new PeerDisconnectedError(session.peer, 'WANT write failed', { cause: err })))
      .finally(() => { session.writing = false })
  }

  private async pumpLoop (session: Session): Promise<void> {
    while (!session.closed && session.queue.length > 0) {
      const batch: ChunkId[] = []
      let taken = 0
      for (const want of session.queue) {
        const inWindow = session.outstandingChunks === 0 ||
          (session.outstandingChunks < this.maxChunks && session.outstandingBytes + session.deliveringBytes + want.size <= this.maxBytes)
        if (!inWindow || batch.length >= MAX_WANTS_PER_FRAME) break
        taken++
        if (want.calls.length === 0) { session.wants.delete(want.hex); continue }
        if (session.outstandingChunks === 0) session.lastActivity = Date.now()
        want.sent = true
        session.outstandingChunks++
        session.outstandingBytes += want.size
        batch.push(want.id)
      }
      session.queue.splice(0, taken)
      if (batch.length === 0) return
      this.armStallTimer(session)
      const sent = await session.frames.write({ type: 'WANT', ids: batch })
      this.components.stats?.bytesUp(session.peer, sent)
    }
  }

  private async readLoop (session: Session): Promise<void> {
    const { frames, peer } = session
    try {
      for (;;) {
        const before = frames.bytesRead
        const msg = await frames.read()
        const frameBytes = frames.bytesRead - before
        this.components.stats?.bytesDown(peer, frameBytes)
        if (msg === undefined) throw new PeerDisconnectedError(peer, `${peer} closed the chunk stream`)
        session.lastActivity = Date.now()
        this.onMessage(session, msg, frameBytes)
        if (session.closed) return
      }
    } catch (err) {
      if (session.closed) return
      const e = err as Error
      if (e instanceof ProtocolViolationError) {
        this.components.onMisbehaviour?.(peer, e.message)
        this.failSession(session, 'protocol-error', e)
      } else if (e instanceof RemoteError) {
        this.failSession(session, 'remote-error', e)
      } else if (e instanceof InvalidMessageError) {
        const v = new ProtocolViolationError(peer, e.message, { cause: e })
        this.components.onMisbehaviour?.(peer, v.message)
        this.failSession(session, 'protocol-error', v)
      } else {
        this.failSession(session, 'disconnected', e instanceof PeerDisconnectedError ? e : new PeerDisconnectedError(peer, undefined, { cause: e }))
      }
    }
  }

  private onMessage (session: Session, msg: Message, frameBytes: number): void {
    const { peer } = session
    if (msg.type === 'ERROR') throw new RemoteError(peer, msg.code, msg.message)
    if (msg.type === 'BLOCKS' && session.batched) { this.onBatch(session, msg, frameBytes); return }
    if (msg.type !== 'BLOCK' && msg.type !== 'DONT_HAVE') throw new ProtocolViolationError(peer, `unexpected ${msg.type} frame from a server`)
    const hex = toHex(msg.id)
    const want = session.wants.get(hex)
    if (want === undefined || !want.sent) throw new ProtocolViolationError(peer, `${msg.type} for ${hex}, which we did not ask for`)
    session.wants.delete(hex)
    session.outstandingChunks--
    session.outstandingBytes -= want.size
    if (msg.type === 'DONT_HAVE') {
      this.components.stats?.dontHave(peer)
      for (const call of want.calls) call.fail(want.id, 'dont-have')
    } else {
      this.onBlock(session, want, msg.bytes, frameBytes)
    }
    if (session.outstandingChunks === 0) this.clearStallTimer(session)
    this.pump(session)
  }

  /**
   * A compressed batch: every entry must be a chunk we asked for and not yet got (checked before inflating,
   * so a hostile frame costs no CPU), the payload inflates to exactly the declared sizes (bounded by them),
   * then each chunk takes the BLOCK path and is hashed there.
   */
  private onBatch (session: Session, msg: BlocksMessage, frameBytes: number): void {
    const { peer } = session
    const wants: Want[] = []
    const seen = new Set<string>()
    let total = 0
    for (const e of msg.entries) {
      const hex = toHex(e.id)
      const want = session.wants.get(hex)
      if (want === undefined || !want.sent || seen.has(hex)) throw new ProtocolViolationError(peer, `BLOCKS entry ${hex}, which we did not ask for`)
      seen.add(hex)
      wants.push(want)
      total += e.size
    }
    const raw = decompressBatch(msg.codec, msg.payload, total)
    let offset = 0
    msg.entries.forEach((e, i) => {
      const want = wants[i] as Want
      session.wants.delete(want.hex)
      session.outstandingChunks--
      session.outstandingBytes -= want.size
      this.onBlock(session, want, raw.subarray(offset, offset + e.size), Math.round(frameBytes * e.size / total))
      offset += e.size
    })
    if (session.outstandingChunks === 0) this.clearStallTimer(session)
    this.pump(session)
  }

  private onBlock (session: Session, want: Want, bytes: Uint8Array, wireBytes: number): void {
    const { peer } = session
    try {
      verifyReceivedChunk(want.id, bytes, `from ${peer}`)
    } catch (err) {
      const e = err as ChunkHashMismatchError
      this.components.stats?.badChunk(peer)
      this.components.onMisbehaviour?.(peer, e.message, BAD_CHUNK_STRIKES)
      for (const call of want.calls) call.fail(want.id, 'hash-mismatch', e)
      return
    }
    this.components.stats?.received(peer, bytes.byteLength)
    for (const call of want.calls) {
      if (call.done) continue
      session.deliveringBytes += bytes.byteLength
      call.chain = call.chain.then(async () => {
        try {
          await call.options.onBlock(want.id, bytes)
          call.result.delivered++
          call.result.bytes += bytes.byteLength
          call.result.wireBytes += wireBytes
          call.settleOne()
        } catch (err) {
          call.fail(want.id, 'consumer-error', err as Error)
        } finally {
          session.deliveringBytes -= bytes.byteLength
          this.pump(session)
        }
      })
    }
  }

  private armStallTimer (session: Session): void {
    if (session.stallTimer !== undefined) return
    const check = (): void => {
      session.stallTimer = undefined
      if (session.closed || session.outstandingChunks === 0) return
      const idle = Date.now() - session.lastActivity
      if (idle >= this.stallMs) {
        this.log('peer %s stalled for %d ms with %d chunks outstanding', session.peer, idle, session.outstandingChunks)
        this.failSession(session, 'stalled', new PeerStalledError(session.peer, idle))
        return
      }
      session.stallTimer = setTimeout(check, this.stallMs - idle)
      session.stallTimer.unref?.()
    }
    session.stallTimer = setTimeout(check, this.stallMs)
    session.stallTimer.unref?.()
  }

  private clearStallTimer (session: Session): void {
    if (session.stallTimer !== undefined) clearTimeout(session.stallTimer)
    session.stallTimer = undefined
  }

  /** Ends a session: every id it holds (sent or queued) fails with `reason`; the next fetch opens a new stream. */
  private failSession (session: Session, reason: FetchFailureReason, error: Error): void {
    if (session.closed) return
    session.closed = true
    this.clearStallTimer(session)
    if (this.sessions.get(session.peer) === session) this.sessions.delete(session.peer)
    this.log('chunk session with %s ends (%s): %s', session.peer, reason, error.message)
    session.frames.stream.abort(error)
    const wants = [...session.wants.values()]
    session.wants.clear()
    session.queue = []
    for (const want of wants) for (const call of want.calls) call.fail(want.id, reason, error)
  }
}
