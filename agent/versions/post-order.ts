// Runs the per-entry steps of finalize concurrently while keeping the one order that matters: a directory's
// own step (mode, mtime, fsync) runs only after every step inside it has finished, because creating a
// symlink in a directory changes its mtime and an fsync of the directory must cover the entries inside.
// Files and subtrees of different directories overlap freely, so their fsyncs wait on the disk together
// instead of one after the other (profiled: finalize was two-thirds idle in one fsync at a time).

interface Frame {
  pending: number
  idle?: () => void
}

interface Waiter { ready: () => boolean, resolve: () => void }

/**
 * Bounded post-order scheduler for a depth-first walk: call enter() on a directory, file() for each entry
 * in it, leave() when the walk leaves it, then settle(). Memory is bounded by `limit` jobs plus one frame
 * per open directory level (a directory waiting for its entries counts as a job). The first failure stops new work (file() and leave() throw it) and is thrown
 * again by settle(), which always waits for every job already started.
 */
export class PostOrderRunner {
  private inflight = 0
  private readonly frames: Frame[] = [{ pending: 0 }]
  private failure: { error: unknown } | undefined
  private readonly waiters: Waiter[] = []

  constructor (private readonly limit: number) {
    if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`limit must be a positive integer, got ${limit}`)
  }

  enter (): void {
    this.throwIfFailed()
    this.frames.push({ pending: 0 })
  }

  /** Starts `job` in the innermost open directory as soon as fewer than `limit` jobs are running. */
  async file (job: () => Promise<void>): Promise<void> {
    this.throwIfFailed()
    await this.until(() => this.inflight < this.limit)
    this.throwIfFailed()
    this.start(this.top(), job)
  }

  /** Closes the innermost directory: `job` runs once every job started inside it has finished. */
  async leave (job: () => Promise<void>): Promise<void> {
    this.throwIfFailed()
    await this.until(() => this.inflight < this.limit)
    this.throwIfFailed()
    if (this.frames.length === 1) throw new RangeError('leave() without a matching enter()')
    const frame = this.frames.pop() as Frame
    const children = frame.pending === 0 ? undefined : new Promise<void>(resolve => { frame.idle = resolve })
    this.start(this.top(), async () => {
      await children
      if (this.failure === undefined) await job()
    })
  }

  /** Waits for every started job; throws the first failure, if any. */
  async settle (): Promise<void> {
    await this.until(() => this.inflight === 0)
    this.throwIfFailed()
  }

  private top (): Frame {
    return this.frames[this.frames.length - 1] as Frame
  }

  private start (frame: Frame, job: () => Promise<void>): void {
    this.inflight++
    frame.pending++
    job().catch((error: unknown) => { this.failure ??= { error } }).finally(() => {
      this.inflight--
      frame.pending--
      if (frame.pending === 0) frame.idle?.()
      this.notify()
    }).catch(() => {})
  }

  private async until (ready: () => boolean): Promise<void> {
    if (ready()) return
    await new Promise<void>(resolve => { this.waiters.push({ ready, resolve }) })
  }

  private notify (): void {
    for (let i = 0; i < this.waiters.length;) {
      const w = this.waiters[i] as Waiter
      if (w.ready()) { this.waiters.splice(i, 1); w.resolve() } else i++
    }
  }

  private throwIfFailed (): void {
    if (this.failure !== undefined) throw this.failure.error
  }
}
