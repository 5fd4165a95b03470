import type { Worker } from 'node:worker_threads'
import { DeltameshError } from '../../protocol/errors.js'
import { deserializeError, startModuleWorker } from '../core/workers.js'
import type { FsBatchRequest, FsBatchResponse } from './fs-batch-worker.js'
import type { FsOp, FsOpResult, FsOutcomes } from './fs-batch-ops.js'

/** The filesystem worker died (crash, out of memory) with steps of ours in flight. */
export class FsWorkerError extends DeltameshError {
  static override name = 'FsWorkerError'
  constructor (reason: string, options?: ErrorOptions) {
    super(`Filesystem worker failed: ${reason}`, options)
    this.name = 'FsWorkerError'
  }
}

export interface FsBatchInit {
  /** Steps sent to the worker in one message at most. */
  maxBatch?: number
  /** The worker is stopped after this long without steps (it costs a thread and ~10 MiB while it lives). */
  idleMs?: number
}

interface Pending { op: FsOp, transfer: readonly ArrayBuffer[], resolve: (r: FsOpResult) => void, reject: (err: Error) => void }

const DEFAULT_MAX_BATCH = 256
const DEFAULT_IDLE_MS = 30_000

/**
 * Runs small filesystem steps (fs-batch-ops.ts) synchronously in one worker thread, many per message: the
 * steps requested while the event loop runs one turn go together, in the order they were requested, and
 * each caller gets its own step's result. Because they run in that order, a step may rely on one requested
 * before it (a file linked into a directory whose creation was requested first) without waiting for it.
 * The worker does not keep the process alive when nothing is pending, and stops after idleMs.
 */
export class FsBatch {
  private readonly maxBatch: number
  private readonly idleMs: number
  private worker: Worker | undefined
  private queue: Pending[] = []
  private flushScheduled = false
  private readonly inflight = new Map<number, Pending[]>()
  private nextId = 0
  private idleTimer: ReturnType<typeof setTimeout> | undefined

  constructor (init: FsBatchInit = {}) {
    this.maxBatch = Math.max(1, init.maxBatch ?? DEFAULT_MAX_BATCH)
    this.idleMs = init.idleMs ?? DEFAULT_IDLE_MS
  }

  /** Whether the worker thread is running now (false before the first step and idleMs after the last). */
  get running (): boolean {
    return this.worker !== undefined
  }

  /**
   * Runs one step; rejects with the step's own error (errno code kept), or FsWorkerError. `transfer`: buffers
   * of the step's bytes that the caller gives up (moved to the worker, not copied; unusable here afterwards).
   */
  async run<T extends FsOp> (op: T, transfer: readonly ArrayBuffer[] = []): Promise<FsOutcomes[T['type']]> {
    const result = await new Promise<FsOpResult>((resolve, reject) => {
      this.queue.push({ op, transfer, resolve, reject })
      if (this.queue.length >= this.maxBatch) this.flush()
      else if (!this.flushScheduled) { this.flushScheduled = true; setImmediate(() => this.flush()) }
    })
    if (!result.ok) throw deserializeError(result.error)
    return result.value as FsOutcomes[T['type']]
  }

  /** Stops the worker; steps in flight fail with FsWorkerError. */
  async close (): Promise<void> {
    const worker = this.worker
    this.worker = undefined
    clearTimeout(this.idleTimer)
    this.failInflight(new FsWorkerError('closed'))
    await worker?.terminate()
  }

  private flush (): void {
    this.flushScheduled = false
    if (this.queue.length === 0) return
    const batch = this.queue.splice(0, this.maxBatch)
    if (this.queue.length > 0) { this.flushScheduled = true; setImmediate(() => this.flush()) }
    const worker = this.ensureWorker()
    const id = this.nextId++
    this.inflight.set(id, batch)
    clearTimeout(this.idleTimer)
    worker.ref()
    const request: FsBatchRequest = { id, ops: batch.map(p => p.op) }
    try {
      worker.postMessage(request, [...new Set(batch.flatMap(p => p.transfer))])
    } catch (err) {
      this.inflight.delete(id)
      const failure = new FsWorkerError((err as Error).message, { cause: err })
      for (const p of batch) p.reject(failure)
    }
  }

  private ensureWorker (): Worker {
    if (this.worker !== undefined) return this.worker
    const worker = startModuleWorker(import.meta.url, 'fs-batch-worker')
    worker.on('message', (msg: FsBatchResponse) => this.onReply(msg))
    worker.on('error', err => { if (this.worker === worker) this.onDeath(new FsWorkerError(err.message, { cause: err })) })
    worker.on('exit', code => { if (this.worker === worker) this.onDeath(new FsWorkerError(`exited with code ${code}`)) })
    this.worker = worker
    return worker
  }

  private onReply (msg: FsBatchResponse): void {
    const batch = this.inflight.get(msg.id)
    if (batch === undefined) return
    this.inflight.delete(msg.id)
    batch.forEach((p, i) => {
      const result = msg.results[i]
      if (result === undefined) p.reject(new FsWorkerError('a step got no result'))
      else p.resolve(result)
    })
    if (this.inflight.size === 0 && this.queue.length === 0) this.becomeIdle()
  }

  private becomeIdle (): void {
    const worker = this.worker
    worker?.unref()
    clearTimeout(this.idleTimer)
    this.idleTimer = setTimeout(() => {
      if (this.worker !== worker || this.inflight.size > 0 || this.queue.length > 0) return
      this.worker = undefined
      void worker?.terminate()
    }, this.idleMs)
    this.idleTimer.unref()
  }

  private onDeath (err: FsWorkerError): void {
    this.worker = undefined
    this.failInflight(err)
  }

  private failInflight (err: FsWorkerError): void {
    const batches = [...this.inflight.values()]
    this.inflight.clear()
    for (const batch of batches) for (const p of batch) p.reject(err)
  }
}

let shared: FsBatch | undefined

/** The process's FsBatch (one worker for every build: the steps are short, and order within a build is kept). */
export function sharedFsBatch (): FsBatch {
  shared ??= new FsBatch()
  return shared
}
