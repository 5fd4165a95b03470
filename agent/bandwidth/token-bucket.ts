/**
 * A token bucket that paces bytes: take(n) resolves once n bytes may pass at `rate` bytes/s, with bursts
 * of at most `burst` bytes. Waiters are served in order (FIFO), so one large take cannot be starved by
 * many small ones. The rate can change at any time and applies to waiters at once. Clock and timers are
 * injectable so tests run in virtual time.
 */
export interface TokenBucketOptions {
  rate: number
  /** Bucket size; default: 1/4 s of rate, at least 256 KiB (one largest frame passes without splitting). */
  burst?: number
  now?: () => number
  setTimer?: (fn: () => void, ms: number) => unknown
  clearTimer?: (handle: unknown) => void
}

interface Waiter { bytes: number, resolve: () => void, reject: (err: unknown) => void, signal?: AbortSignal, onAbort?: () => void }

const MIN_BURST = 256 * 1024

export class TokenBucket {
  private tokens: number
  private last: number
  private rateValue: number
  private burstValue: number
  private readonly explicitBurst: number | undefined
  private readonly queue: Waiter[] = []
  private timer: unknown
  private readonly now: () => number
  private readonly setTimer: (fn: () => void, ms: number) => unknown
  private readonly clearTimer: (handle: unknown) => void

  constructor (options: TokenBucketOptions) {
    this.now = options.now ?? (() => performance.now())
    this.setTimer = options.setTimer ?? ((fn, ms) => setTimeout(fn, ms))
    this.clearTimer = options.clearTimer ?? (h => clearTimeout(h as ReturnType<typeof setTimeout>))
    this.rateValue = options.rate
    this.explicitBurst = options.burst
    this.burstValue = this.computeBurst()
    this.tokens = this.burstValue
    this.last = this.now()
  }

  get rate (): number { return this.rateValue }

  setRate (rate: number): void {
    this.refill()
    this.rateValue = rate
    this.burstValue = this.computeBurst()
    this.tokens = Math.min(this.tokens, this.burstValue)
    this.reschedule()
  }

  private computeBurst (): number {
    if (this.explicitBurst !== undefined) return this.explicitBurst
    return Number.isFinite(this.rateValue) ? Math.max(MIN_BURST, this.rateValue / 4) : Infinity
  }

  private refill (): void {
    const t = this.now()
    if (Number.isFinite(this.rateValue)) this.tokens = Math.min(this.burstValue, this.tokens + (t - this.last) / 1000 * this.rateValue)
    else this.tokens = Infinity
    this.last = t
  }

  /** Waits until `bytes` may pass. A take larger than the burst is allowed and drives the bucket negative. */
  async take (bytes: number, signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted()
    if (!Number.isFinite(this.rateValue) && this.queue.length === 0) return
    this.refill()
    if (this.queue.length === 0 && this.tokens > 0) { this.tokens -= bytes; return }
    await new Promise<void>((resolve, reject) => {
      const waiter: Waiter = { bytes, resolve, reject, signal }
      if (signal !== undefined) {
        waiter.onAbort = () => {
          const i = this.queue.indexOf(waiter)
          if (i >= 0) this.queue.splice(i, 1)
          reject(signal.reason)
          this.reschedule()
        }
        signal.addEventListener('abort', waiter.onAbort, { once: true })
      }
      this.queue.push(waiter)
      this.reschedule()
    })
  }

  private reschedule (): void {
    if (this.timer !== undefined) { this.clearTimer(this.timer); this.timer = undefined }
    this.refill()
    while (this.queue.length > 0 && this.tokens > 0) {
      const w = this.queue.shift() as Waiter
      if (w.onAbort !== undefined) w.signal?.removeEventListener('abort', w.onAbort)
      this.tokens -= w.bytes
      w.resolve()
    }
    if (this.queue.length === 0) return
    // tokens ≤ 0: wait until they are positive again
    const ms = Math.max(1, Math.ceil((-this.tokens + 1) / this.rateValue * 1000))
    this.timer = this.setTimer(() => { this.timer = undefined; this.reschedule() }, ms)
  }

  /** Rejects every waiter (shutdown). */
  close (): void {
    if (this.timer !== undefined) this.clearTimer(this.timer)
    for (const w of this.queue.splice(0)) w.reject(new Error('bandwidth limiter closed'))
  }
}
