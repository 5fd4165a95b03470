import { DeltameshError } from '../../protocol/errors.js'

/**
 * A rate limiter with fair queueing: bytes pass at `rate` bytes/s (a token bucket with bursts of at most
 * `burst` bytes), and when several flows (peers, trees) wait, start-time fair queueing decides who goes
 * next, so each busy flow gets bytes in proportion to its weight. A flow with nothing waiting takes no
 * share, so an idle share goes to whoever is busy (work-conserving), and a small pull is never stuck
 * behind a large one.
 *
 * Why not deficit round robin: our senders keep one or a few requests waiting per flow (a chunk stream
 * asks again only after its last block went out), so a flow's queue empties after every grant and DRR,
 * which resets an emptied flow's credit, degrades to one request per flow per round — unfair in bytes
 * when request sizes differ. Virtual start tags remember what each flow was given, across the gaps.
 *
 * The rate can change at any time and applies to waiters at once. Clock and timers are injectable so
 * tests run in virtual time.
 */
export interface FairShaperOptions {
  rate: number
  /** Bucket size; default: 1/4 s of rate, at least 256 KiB (one largest chunk passes without splitting). */
  burst?: number
  now?: () => number
  setTimer?: (fn: () => void, ms: number) => unknown
  clearTimer?: (handle: unknown) => void
}

export interface FlowQueue { flow: string, waiters: number, bytes: number, weight: number }

interface Waiter {
  flow: string
  bytes: number
  /** Virtual start tag: the flow's previous finish, or the system's virtual time if the flow was idle. */
  start: number
  /** Arrival order, to break ties between equal tags. */
  order: number
  resolve: () => void
  reject: (err: unknown) => void
  signal?: AbortSignal
  onAbort?: () => void
}

const MIN_BURST = 256 * 1024
const MAX_WEIGHT = 1000
/** Past this many remembered flows, those whose finish tag is behind `virtual` are dropped: they would start at `virtual` anyway. */
const FORGET_AFTER_TAGS = 4096

export class ShaperClosedError extends DeltameshError {
  static override name = 'ShaperClosedError'
  constructor () {
    super('bandwidth limiter closed')
    this.name = 'ShaperClosedError'
  }
}

export class FairShaper {
  private tokens: number
  private last: number
  private rateValue: number
  private burstValue: number
  private readonly explicitBurst: number | undefined
  /** Waiting requests, by start tag. */
  private readonly waiting: Waiter[] = []
  /** System virtual time: the start tag of the last request granted. */
  private virtual = 0
  /** Each flow's last finish tag. */
  private readonly finish = new Map<string, number>()
  private arrivals = 0
  private readonly weights = new Map<string, number>()
  private timer: unknown
  private closed = false
  private readonly now: () => number
  private readonly setTimer: (fn: () => void, ms: number) => unknown
  private readonly clearTimer: (handle: unknown) => void

  constructor (options: FairShaperOptions) {
    this.now = options.now ?? (() => performance.now())
    this.setTimer = options.setTimer ?? ((fn, ms) => { const t = setTimeout(fn, ms); t.unref?.(); return t })
    this.clearTimer = options.clearTimer ?? (h => clearTimeout(h as ReturnType<typeof setTimeout>))
    this.rateValue = options.rate
    this.explicitBurst = options.burst
    this.burstValue = this.computeBurst()
    this.tokens = this.burstValue
    this.last = this.now()
  }

  get rate (): number { return this.rateValue }
  get burst (): number { return this.burstValue }

  setRate (rate: number): void {
    if (!(rate > 0)) throw new RangeError(`rate must be positive or Infinity, not ${rate}`)
    this.refill()
    this.rateValue = rate
    this.burstValue = this.computeBurst()
    // a lower limit must not be exceeded by tokens saved up under the higher one
    this.tokens = Math.min(this.tokens, this.burstValue)
    if (!Number.isFinite(this.tokens)) this.tokens = this.burstValue
    this.reschedule()
  }

  /** Share of a flow relative to the others (default 1). */
  setWeight (flow: string, weight: number): void {
    if (!(weight > 0) || weight > MAX_WEIGHT) throw new RangeError(`weight must be in (0, ${MAX_WEIGHT}], not ${weight}`)
    if (weight === 1) this.weights.delete(flow)
    else this.weights.set(flow, weight)
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

  /**
   * Waits until `bytes` of `flow` may pass. A take larger than the burst is allowed (it drives the bucket
   * negative and later takes wait it off), so the long-run rate holds for any request size.
   */
  async take (flow: string, bytes: number, signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted()
    if (this.closed) throw new ShaperClosedError()
    if (this.waiting.length === 0) {
      if (!Number.isFinite(this.rateValue)) return
      this.refill()
      if (this.tokens > 0) {
        // granted at once, so it is the request in service: virtual time moves to it, or a flow that
        // ran alone would be far ahead in tags and starve when another arrives
        this.virtual = Math.max(this.virtual, this.tag(flow, bytes))
        this.tokens -= bytes
        return
      }
    }
    await new Promise<void>((resolve, reject) => {
      const start = this.tag(flow, bytes)
      const waiter: Waiter = { flow, bytes, start, order: this.arrivals++, resolve, reject, signal }
      if (signal !== undefined) {
        waiter.onAbort = () => {
          const i = this.waiting.indexOf(waiter)
          if (i < 0) return
          this.waiting.splice(i, 1)
          reject(signal.reason)
          this.reschedule()
        }
        signal.addEventListener('abort', waiter.onAbort, { once: true })
      }
      // insert by (start, order): later arrivals with equal tags go after
      let lo = 0
      let hi = this.waiting.length
      while (lo < hi) {
        const mid = (lo + hi) >> 1
        if ((this.waiting[mid] as Waiter).start <= start) lo = mid + 1
        else hi = mid
      }
      this.waiting.splice(lo, 0, waiter)
      this.reschedule()
    })
  }

  /** Charges `bytes` to `flow` in virtual time; returns the request's start tag. */
  private tag (flow: string, bytes: number): number {
    const start = Math.max(this.virtual, this.finish.get(flow) ?? 0)
    this.finish.set(flow, start + bytes / (this.weights.get(flow) ?? 1))
    if (this.finish.size > FORGET_AFTER_TAGS) {
      for (const [f, tag] of this.finish) if (tag <= this.virtual) this.finish.delete(f)
    }
    return start
  }

  /** Gives back tokens taken for bytes that never crossed the link (a request that was not answered). */
  refund (bytes: number): void {
    if (!Number.isFinite(this.rateValue) || bytes <= 0) return
    this.refill()
    this.tokens = Math.min(this.burstValue, this.tokens + bytes)
    this.reschedule()
  }

  /** What waits, per flow (for status). */
  queued (): FlowQueue[] {
    const byFlow = new Map<string, FlowQueue>()
    for (const w of this.waiting) {
      const q = byFlow.get(w.flow) ?? { flow: w.flow, waiters: 0, bytes: 0, weight: this.weights.get(w.flow) ?? 1 }
      q.waiters++
      q.bytes += w.bytes
      byFlow.set(w.flow, q)
    }
    return [...byFlow.values()]
  }

  private reschedule (): void {
    if (this.timer !== undefined) { this.clearTimer(this.timer); this.timer = undefined }
    if (this.closed) return
    this.refill()
    while (this.waiting.length > 0 && this.tokens > 0) {
      const next = this.waiting.shift() as Waiter
      this.virtual = Math.max(this.virtual, next.start)
      this.tokens -= next.bytes
      if (next.onAbort !== undefined) next.signal?.removeEventListener('abort', next.onAbort)
      next.resolve()
    }
    if (this.waiting.length === 0) return
    // tokens ≤ 0: wait until they are positive again
    const ms = Math.max(1, Math.ceil((-this.tokens + 1) / this.rateValue * 1000))
    this.timer = this.setTimer(() => { this.timer = undefined; this.reschedule() }, ms)
  }

  /** Rejects every waiter (shutdown). */
  close (): void {
    this.closed = true
    if (this.timer !== undefined) this.clearTimer(this.timer)
    this.timer = undefined
    for (const w of this.waiting.splice(0)) {
      if (w.onAbort !== undefined) w.signal?.removeEventListener('abort', w.onAbort)
      w.reject(new ShaperClosedError())
    }
  }
}
