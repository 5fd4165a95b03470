import { stat } from 'node:fs/promises'
import { availableParallelism } from 'node:os'
import type { Worker } from 'node:worker_threads'
import { DeltameshError } from '../../protocol/errors.js'
import { deserializeError, startModuleWorker } from '../core/workers.js'
import type { ChunkingParams } from '../../protocol/manifest.js'
import { validateChunkingParams } from '../../protocol/manifest.js'
import type { PlacedChunk } from '../store/types.js'
import { endOf, planSegments, stitch, type Segment } from './split.js'
import type { ChunkRef } from '../../protocol/manifest.js'
import { packChunks, unpackChunks, type JobRequest, type JobResult, type WorkerRequest, type WorkerResponse } from './worker-protocol.js'
import { fsPath } from '../../protocol/paths.js'

/** A worker thread died (crash, out of memory, terminated) while it was chunking this job's file. */
export class ChunkerWorkerError extends DeltameshError {
  static override name = 'ChunkerWorkerError'
  constructor (readonly path: string, reason: string, options?: ErrorOptions) {
    super(`Chunker worker died while chunking ${path}: ${reason}`, options)
    this.name = 'ChunkerWorkerError'
  }
}

/** The pool's queue is full (the caller submits faster than the workers chunk, without bounding itself). */
export class ChunkerQueueFullError extends DeltameshError {
  static override name = 'ChunkerQueueFullError'
  constructor (readonly limit: number) {
    super(`Chunker queue is full (${limit} jobs waiting)`)
    this.name = 'ChunkerQueueFullError'
  }
}

export class ChunkerPoolClosedError extends DeltameshError {
  static override name = 'ChunkerPoolClosedError'
  constructor () {
    super('Chunker pool is closed')
    this.name = 'ChunkerPoolClosedError'
  }
}

export interface ChunkerPoolInit {
  /** Worker threads; default os.availableParallelism(). */
  size?: number
  /** Jobs waiting for a worker beyond which chunkFile rejects; the scanner's lookahead stays far below it. */
  maxQueue?: number
  /**
   * Files at least this large are cut in segments by several workers at once (identical boundaries, see
   * split.ts), so that one big ISO uses every core. Default 64 MiB; Infinity disables splitting.
   */
  splitThreshold?: number
  /**
   * Jobs one worker runs at once. Small files are latency-bound (open, read, read, close: four thread-pool
   * round trips for 20 KiB of hashing), so a worker with one job at a time idles on I/O; measured on
   * node_modules, one job per worker made the pool slower than a single thread. Default 4.
   */
  jobsPerWorker?: number
  /**
   * Workers are started by the first job and stopped after this long with nothing to do. An agent chunks
   * only when it publishes: idle workers held ~15 MiB each (more after chunking grew their heaps) in every
   * agent, subscribers included, for the agent's whole life. Default 60 s (a publish after that starts them again).
   */
  idleMs?: number
}

export const DEFAULT_MAX_QUEUE = 4096
export const DEFAULT_IDLE_MS = 60_000
export const DEFAULT_SPLIT_THRESHOLD = 64 * 1024 * 1024
export const DEFAULT_JOBS_PER_WORKER = 4

interface Job {
  request: JobRequest
  resolve: (result: JobResult) => void
  reject: (err: unknown) => void
  signal?: AbortSignal
  onAbort?: () => void
  settled: boolean
}

interface Slot {
  worker: Worker
  jobs: Map<number, Job>
}

function startWorker (): Worker {
  return startModuleWorker(import.meta.url, 'worker')
}

export class ChunkerPool {
  readonly size: number
  private readonly maxQueue: number
  private readonly splitThreshold: number
  private readonly jobsPerWorker: number
  private readonly slots: Slot[] = []
  private readonly queue: Job[] = []
  private nextId = 1
  private closed = false
  private readonly idleMs: number
  private idleTimer: ReturnType<typeof setTimeout> | undefined

  constructor (init: ChunkerPoolInit = {}) {
    this.size = Math.max(1, Math.floor(init.size ?? availableParallelism()))
    this.maxQueue = init.maxQueue ?? DEFAULT_MAX_QUEUE
    this.splitThreshold = init.splitThreshold ?? DEFAULT_SPLIT_THRESHOLD
    this.jobsPerWorker = Math.max(1, init.jobsPerWorker ?? DEFAULT_JOBS_PER_WORKER)
    this.idleMs = init.idleMs ?? DEFAULT_IDLE_MS
  }

  /** Worker threads running now (0 before the first job and after idleMs without one). */
  get workers (): number {
    return this.slots.length
  }

  /**
   * Chunks and hashes one file in worker threads; same result as chunker.chunkFile in this thread.
   * @param knownSize the file's size when the caller has just stat'ed it (the scanner has): saves a stat.
   * @param options.sparse the file has holes at the source: its all-zero chunks are recorded as holes.
   */
  async chunkFile (path: string, params: ChunkingParams, signal?: AbortSignal, knownSize?: number, options: { sparse?: boolean } = {}): Promise<PlacedChunk[]> {
    const sparse = options.sparse === true
    validateChunkingParams(params)
    signal?.throwIfAborted()
    if (this.closed) throw new ChunkerPoolClosedError()
    if (this.size > 1 && Number.isFinite(this.splitThreshold)) {
      const size = knownSize ?? (await stat(fsPath(path))).size
      if (size >= this.splitThreshold) return await this.chunkSplit(path, params, size, sparse, signal)
    }
    return await this.submitChunk(path, params, { start: 0 }, sparse, signal)
  }

  /**
   * True when the file still holds exactly `chunks` (each range hashes to its id, nothing follows the last):
   * the check for a file whose ctime alone changed (verify.ts). A file of at least splitThreshold bytes is
   * checked in contiguous runs of chunks by several workers at once (no stitching: the boundaries are given);
   * the first run that does not match stops the others.
   */
  async verifyFile (path: string, chunks: readonly ChunkRef[], signal?: AbortSignal): Promise<boolean> {
    signal?.throwIfAborted()
    if (this.closed) throw new ChunkerPoolClosedError()
    const runs = this.size > 1 ? verifyRuns(chunks, this.size, this.splitThreshold) : [{ from: 0, to: chunks.length, start: 0 }]
    if (runs.length === 1) return await this.submitVerify(path, chunks, 0, true, signal)
    const controller = new AbortController()
    const combined = signal === undefined ? controller.signal : AbortSignal.any([signal, controller.signal])
    const parts = runs.map(async (r, k) => {
      const match = await this.submitVerify(path, chunks.slice(r.from, r.to), r.start, k === runs.length - 1, combined)
      if (!match) controller.abort(new VerifyMismatch())
      return match
    })
    const settled = await Promise.allSettled(parts)
    signal?.throwIfAborted()
    if (settled.some(s => s.status === 'fulfilled' && !s.value)) return false
    const failed = settled.find(s => s.status === 'rejected')
    if (failed !== undefined) throw failed.reason
    return true
  }

  /** Rejects queued and running jobs with ChunkerPoolClosedError and terminates the workers. */
  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    clearTimeout(this.idleTimer)
    for (const job of this.queue.splice(0)) this.settle(job, new ChunkerPoolClosedError())
    await Promise.all(this.slots.map(async slot => {
      for (const job of slot.jobs.values()) this.settle(job, new ChunkerPoolClosedError())
      slot.jobs.clear()
      await slot.worker.terminate()
    }))
  }

  private async chunkSplit (path: string, params: ChunkingParams, fileSize: number, sparse: boolean, signal?: AbortSignal): Promise<PlacedChunk[]> {
    const segments = planSegments(fileSize, this.size, params.maxSize)
    // If one segment fails, abort the others instead of letting them run on.
    const controller = new AbortController()
    const combined = signal === undefined ? controller.signal : AbortSignal.any([signal, controller.signal])
    const parts = segments.map(async s => await this.submitChunk(path, params, s, sparse, combined))
    for (const p of parts) p.catch(() => {}) // each is awaited (or settled) below; no unhandled rejection meanwhile
    try {
      let chain = await parts[0]!
      for (let k = 1; k < segments.length; k++) {
        const next = await parts[k]!
        let stitched = stitch(chain, next)
        if (stitched === undefined) {
          // The chains did not meet within the overlap: re-cut this segment from the last true cut.
          const redo: Segment = { start: endOf(chain), end: segments[k]!.end }
          stitched = chain.concat(await this.submitChunk(path, params, redo, sparse, combined))
        }
        chain = stitched
      }
      return chain
    } catch (err) {
      controller.abort(err)
      await Promise.allSettled(parts)
      throw err
    }
  }

  private async submitChunk (path: string, params: ChunkingParams, segment: Segment, sparse: boolean, signal?: AbortSignal): Promise<PlacedChunk[]> {
    const result = await this.submit({ type: 'chunk', id: this.nextId++, path, params, start: segment.start, end: segment.end, ...(sparse ? { sparse } : {}) }, signal)
    if (result.type !== 'done') throw new ChunkerWorkerError(path, `answered a chunk job with '${result.type}'`)
    return unpackChunks(result.start, result.sizes, result.ids)
  }

  private async submitVerify (path: string, chunks: readonly ChunkRef[], start: number, checkEnd: boolean, signal?: AbortSignal): Promise<boolean> {
    const { sizes, ids } = packChunks(chunks)
    const result = await this.submit({ type: 'verify', id: this.nextId++, path, start, sizes, ids, checkEnd }, signal)
    if (result.type !== 'verified') throw new ChunkerWorkerError(path, `answered a verify job with '${result.type}'`)
    return result.match
  }

  private async submit (request: JobRequest, signal?: AbortSignal): Promise<JobResult> {
    if (this.closed) throw new ChunkerPoolClosedError()
    signal?.throwIfAborted()
    if (this.queue.length >= this.maxQueue) throw new ChunkerQueueFullError(this.maxQueue)
    return await new Promise<JobResult>((resolve, reject) => {
      const job: Job = { request, resolve, reject, signal, settled: false }
      if (signal !== undefined) {
        job.onAbort = () => this.abortJob(job)
        signal.addEventListener('abort', job.onAbort, { once: true })
      }
      this.queue.push(job)
      this.dispatch()
    })
  }

  private abortJob (job: Job): void {
    const queued = this.queue.indexOf(job)
    if (queued >= 0) this.queue.splice(queued, 1)
    const slot = this.slots.find(s => s.jobs.get(job.request.id) === job)
    // The worker stays busy until it acknowledges: it may still be reading the file.
    if (slot !== undefined) this.post(slot, { type: 'abort', id: job.request.id })
    this.settle(job, job.signal?.reason ?? new DOMException('Aborted', 'AbortError'))
  }

  private settle (job: Job, error: unknown, result?: JobResult): void {
    if (job.settled) return
    job.settled = true
    if (job.onAbort !== undefined) job.signal?.removeEventListener('abort', job.onAbort)
    if (result !== undefined) job.resolve(result)
    else job.reject(error)
  }

  private dispatch (): void {
    if (this.queue.length > 0 && !this.closed) {
      clearTimeout(this.idleTimer)
      this.idleTimer = undefined
      while (this.slots.length < this.size) this.slots.push(this.spawn())
    }
    while (this.queue.length > 0) {
      // Least busy first, so the segments of a split file land on different workers.
      let slot: Slot | undefined
      for (const s of this.slots) if (s.jobs.size < this.jobsPerWorker && (slot === undefined || s.jobs.size < slot.jobs.size)) slot = s
      if (slot === undefined) return
      const job = this.queue.shift()!
      slot.jobs.set(job.request.id, job)
      slot.worker.ref()
      // a verify job's chunk list moves to the worker instead of being copied (the job owns it: packChunks made it)
      this.post(slot, job.request, job.request.type === 'verify' ? [job.request.sizes.buffer, job.request.ids.buffer] : [])
    }
    this.armIdle()
  }

  /** With no job queued or running, stops the workers after idleMs (a later job starts new ones). */
  private armIdle (): void {
    if (this.closed || this.idleTimer !== undefined || this.queue.length > 0 || this.slots.length === 0) return
    if (this.slots.some(s => s.jobs.size > 0)) return
    this.idleTimer = setTimeout(() => {
      this.idleTimer = undefined
      if (this.closed || this.queue.length > 0 || this.slots.some(s => s.jobs.size > 0)) return
      // out of the slot list first, so their exit is not taken for a crash to replace (spawn's onDeath)
      for (const slot of this.slots.splice(0)) void slot.worker.terminate()
    }, this.idleMs)
    this.idleTimer.unref()
  }

  private post (slot: Slot, msg: WorkerRequest, transfer: ArrayBuffer[] = []): void {
    slot.worker.postMessage(msg, transfer)
  }

  private spawn (): Slot {
    const worker = startWorker()
    const slot: Slot = { worker, jobs: new Map() }
    worker.on('message', (msg: WorkerResponse) => {
      const job = slot.jobs.get(msg.id)
      if (job === undefined) return
      slot.jobs.delete(msg.id)
      if (slot.jobs.size === 0) worker.unref()
      if (msg.type === 'failed') this.settle(job, deserializeError(msg.error))
      else this.settle(job, undefined, msg)
      this.dispatch()
    })
    let dead = false
    const onDeath = (reason: string, cause?: unknown): void => {
      if (dead) return
      dead = true
      if (this.closed) return
      for (const job of slot.jobs.values()) this.settle(job, new ChunkerWorkerError(job.request.path, reason, { cause }))
      slot.jobs.clear()
      const index = this.slots.indexOf(slot)
      if (index >= 0) this.slots[index] = this.spawn()
      void worker.terminate() // after an 'error' the thread may still be winding down; make sure it is gone
      this.dispatch()
    }
    worker.on('error', err => onDeath(err.message, err))
    worker.on('exit', code => onDeath(`exited with code ${code}`))
    // Idle workers must not keep the process alive (a forgotten close() would hang the agent's exit); busy
    // ones are ref'd in dispatch(), or an `await pool.chunkFile()` with nothing else pending would see the
    // process exit under it.
    worker.unref()
    return slot
  }
}

/** Why the other runs of a split verify were stopped: one run did not match (never surfaces to a caller). */
class VerifyMismatch extends Error {
  static override name = 'VerifyMismatch'
  constructor () {
    super('another run of the file did not match its chunks')
    this.name = 'VerifyMismatch'
  }
}

/**
 * Contiguous runs of `chunks` of about equal bytes, one per worker, with the file offset each starts at; one
 * run for a file below `threshold` (a small file is latency-bound: splitting it only adds round trips).
 */
export function verifyRuns (chunks: readonly ChunkRef[], workers: number, threshold: number): Array<{ from: number, to: number, start: number }> {
  let total = 0
  for (const c of chunks) total += c.size
  if (total < threshold || workers <= 1 || chunks.length < 2) return [{ from: 0, to: chunks.length, start: 0 }]
  const runs: Array<{ from: number, to: number, start: number }> = []
  let from = 0
  let start = 0
  let offset = 0
  for (let i = 0; i < chunks.length; i++) {
    offset += chunks[i]!.size
    // cut after the chunk that reaches the next share of the bytes, leaving the rest to the last run
    if (runs.length < workers - 1 && offset >= total * (runs.length + 1) / workers && i + 1 < chunks.length) {
      runs.push({ from, to: i + 1, start })
      from = i + 1
      start = offset
    }
  }
  runs.push({ from, to: chunks.length, start })
  return runs
}
