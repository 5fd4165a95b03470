/**
 * Steps of prepare() in flight (FsBatch): awaited in bulk — when too many are queued, before prepare() touches
 * the filesystem itself (a step may be creating the directory it writes into), and at the end. A failure is
 * kept and thrown by settle(); FsBatch finishes steps in the order they were queued, so waiting for the oldest
 * first waits for none longer than needed.
 */
export class QueuedSteps {
  private readonly queue: Array<Promise<void>> = []
  private failure: { err: unknown } | undefined

  add (step: Promise<unknown>): void {
    this.queue.push(step.then(() => {}, (err: unknown) => { this.failure ??= { err } }))
  }

  get size (): number { return this.queue.length }

  /** Waits until at most `max` steps remain; throws the first failure. */
  async settle (max = 0): Promise<void> {
    while (this.queue.length > max) await this.queue.shift()
    if (this.failure !== undefined) throw this.failure.err
  }

  /** Waits for every step, never throwing (on the way out of a failure: nothing may run behind it). */
  async quiesce (): Promise<void> {
    while (this.queue.length > 0) await this.queue.shift()
  }
}
