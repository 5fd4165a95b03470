/** Bytes per second over a sliding window of one-second buckets (for progress and status). */
export class RateMeter {
  private readonly buckets = new Map<number, number>()

  constructor (private readonly windowSeconds = 5, private readonly now: () => number = Date.now) {}

  add (bytes: number): void {
    const second = Math.floor(this.now() / 1000)
    this.buckets.set(second, (this.buckets.get(second) ?? 0) + bytes)
    for (const key of this.buckets.keys()) if (key <= second - this.windowSeconds) this.buckets.delete(key)
  }

  rate (): number {
    const nowMs = this.now()
    const second = Math.floor(nowMs / 1000)
    let total = 0
    for (const [key, bytes] of this.buckets) if (key > second - this.windowSeconds) total += bytes
    // the current second is partial: divide by the time actually covered
    const covered = this.windowSeconds - 1 + (nowMs % 1000) / 1000
    return total / covered
  }
}
