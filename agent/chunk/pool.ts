import { stat } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { availableParallelism } from 'node:os'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'
import { DeltameshError } from '../../protocol/errors.js'
import type { ChunkingParams } from '../../protocol/manifest.js'
import { validateChunkingParams } from '../../protocol/manifest.js'
import type { PlacedChunk } from '../store/types.js'
import { endOf, planSegments, stitch, type Segment } from './split.js'
import { deserializeError, unpackChunks, type ChunkJobRequest, type WorkerRequest, type WorkerResponse } from './worker-protocol.js'

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
  request: ChunkJobRequest
  resolve: (chunks: PlacedChunk[]) => void
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
  if (!import.meta.url.endsWith('.ts')) return new Worker(new URL('./worker.js', import.meta.url))
  // Under vitest or tsx this module is the .ts source. `execArgv: ['--import', 'tsx']` does NOT work on Node 20:
  // ESM hooks registered in a worker apply only after its entry module was loaded ("Unknown file extension
  // .ts"). tsx's CommonJS require hook is synchronous and per thread, and compiles the worker (and the modules
  // it imports, import.meta.url included) to CJS on the fly.
  const require = createRequire(import.meta.url)
  const hook = require.resolve('tsx/cjs')
  const entry = fileURLToPath(new URL('./worker.ts', import.meta.url))
  return new Worker(`require(${JSON.stringify(hook)}); require(${JSON.stringify(entry)})`, { eval: true })
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

  /** Chunks and hashes one file in worker threads; same result as chunker.chunkFile in this thread. */
  /** @param knownSize the file's size when the caller has just stat'ed it (the scanner has): saves a stat. */
  async chunkFile (path: string, params: ChunkingParams, signal?: AbortSignal, knownSize?: number): Promise<PlacedChunk[]> {
    validateChunkingParams(params)
    signal?.throwIfAborted()
    if (this.closed) throw new ChunkerPoolClosedError()
    if (this.size > 1 && Number.isFinite(this.splitThreshold)) {
      const size = knownSize ?? (await stat(path)).size
      if (size >= this.splitThreshold) return await this.chunkSplit(path, params, size, signal)
    }
    return await this.submit(path, params, { start: 0 }, signal)
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

  private async chunkSplit (path: string, params: ChunkingParams, fileSize: number, signal?: AbortSignal): Promise<PlacedChunk[]> {
    const segments = planSegments(fileSize, this.size, params.maxSize)
    // If one segment fails, abort the others instead of letting them run on.
    const controller = new AbortController()
    const combined = signal === undefined ? controller.signal : AbortSignal.any([signal, controller.signal])
    const parts = segments.map(async s => await this.submit(path, params, s, combined))
    for (const p of parts) p.catch(() => {}) // each is awaited (or settled) below; no unhandled rejection meanwhile
    try {
      let chain = await parts[0]!
      for (let k = 1; k < segments.length; k++) {
        const next = await parts[k]!
        let stitched = stitch(chain, next)
        if (stitched === undefined) {
          // The chains did not meet within the overlap: re-cut this segment from the last true cut.
          const redo: Segment = { start: endOf(chain), end: segments[k]!.end }
          stitched = chain.concat(await this.submit(path, params, redo, combined))
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

  private async submit (path: string, params: ChunkingParams, segment: Segment, signal?: AbortSignal): Promise<PlacedChunk[]> {
    if (this.closed) throw new ChunkerPoolClosedError()
    signal?.throwIfAborted()
    if (this.queue.length >= this.maxQueue) throw new ChunkerQueueFullError(this.maxQueue)
    return await new Promise<PlacedChunk[]>((resolve, reject) => {
      const request: ChunkJobRequest = { type: 'chunk', id: this.nextId++, path, params, start: segment.start, end: segment.end }
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

  private settle (job: Job, error: unknown, chunks?: PlacedChunk[]): void {
    if (job.settled) return
    job.settled = true
    if (job.onAbort !== undefined) job.signal?.removeEventListener('abort', job.onAbort)
    if (chunks !== undefined) job.resolve(chunks)
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
      this.post(slot, job.request)
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

  private post (slot: Slot, msg: WorkerRequest): void {
    slot.worker.postMessage(msg)
  }

  private spawn (): Slot {
    const worker = startWorker()
    const slot: Slot = { worker, jobs: new Map() }
    worker.on('message', (msg: WorkerResponse) => {
      const job = slot.jobs.get(msg.id)
      if (job === undefined) return
      slot.jobs.delete(msg.id)
      if (slot.jobs.size === 0) worker.unref()
      if (msg.type === 'done') this.settle(job, undefined, unpackChunks(msg.start, msg.sizes, msg.ids))
      else this.settle(job, deserializeError(msg.error))
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
