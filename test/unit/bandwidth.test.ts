import { describe, expect, it } from 'vitest'
import { parseRate, formatRate } from '../../agent/bandwidth/rate.js'
import { TokenBucket } from '../../agent/bandwidth/token-bucket.js'

describe('parseRate', () => {
  it('reads the units operators type', () => {
    expect(parseRate('10MB/s')).toBe(10e6)
    expect(parseRate('80Mbit/s')).toBe(10e6)
    expect(parseRate('512KiB/s')).toBe(512 * 1024)
    expect(parseRate('1.5 GB/s')).toBe(1.5e9)
    expect(parseRate('unlimited')).toBe(Infinity)
    expect(formatRate(10e6)).toBe('10MB/s')
  })
  it('rejects nonsense with a clear error', () => {
    for (const bad of ['10', 'fast', '10MB', '-5MB/s', '10XB/s']) expect(() => parseRate(bad), bad).toThrow(/Not a rate/)
  })
})

/** Virtual time: timers fire when the test advances the clock. */
function virtualClock (): { now: () => number, setTimer: (fn: () => void, ms: number) => unknown, clearTimer: (h: unknown) => void, advance: (ms: number) => Promise<void> } {
  let t = 0
  const timers = new Map<number, { at: number, fn: () => void }>()
  let nextId = 1
  return {
    now: () => t,
    setTimer: (fn, ms) => { const id = nextId++; timers.set(id, { at: t + ms, fn }); return id },
    clearTimer: h => { timers.delete(h as number) },
    advance: async (ms: number) => {
      const end = t + ms
      await new Promise(resolve => setImmediate(resolve)) // let senders reach their next take()
      for (;;) {
        const due = [...timers.entries()].filter(([, v]) => v.at <= end).sort((a, b) => a[1].at - b[1].at)[0]
        if (due === undefined) break
        timers.delete(due[0])
        t = due[1].at
        due[1].fn()
        await new Promise(resolve => setImmediate(resolve))
      }
      t = end
      await new Promise(resolve => setImmediate(resolve))
    },
  }
}

describe('TokenBucket', () => {
  it('holds a rate over time within one burst', async () => {
    const clock = virtualClock()
    const bucket = new TokenBucket({ rate: 1_000_000, burst: 100_000, ...clock })
    let passed = 0
    const sender = (async () => { for (;;) { await bucket.take(10_000); passed += 10_000; if (passed >= 5_000_000) return } })()
    await clock.advance(3000)
    // 3 s at 1 MB/s plus the initial burst
    expect(passed).toBeGreaterThanOrEqual(3_000_000)
    expect(passed).toBeLessThanOrEqual(3_000_000 + 100_000 + 10_000)
    await clock.advance(3000)
    await sender
  })

  it('applies a new rate to waiting senders at once', async () => {
    const clock = virtualClock()
    const bucket = new TokenBucket({ rate: 100_000, burst: 10_000, ...clock })
    let passed = 0
    let stop = false
    const sender = (async () => { while (!stop) { await bucket.take(10_000); passed += 10_000 } })()
    await clock.advance(1000)
    const before = passed
    bucket.setRate(1_000_000)
    await clock.advance(1000)
    expect(passed - before).toBeGreaterThanOrEqual(900_000)
    stop = true
    bucket.setRate(Infinity)
    await clock.advance(10)
    await sender
  })

  it('serves waiters in order and honours abort', async () => {
    const clock = virtualClock()
    const bucket = new TokenBucket({ rate: 1000, burst: 1000, ...clock })
    await bucket.take(1000)
    const order: string[] = []
    const controller = new AbortController()
    const a = bucket.take(500).then(() => order.push('a'))
    const b = bucket.take(500, controller.signal).then(() => order.push('b'), () => order.push('b-aborted'))
    const c = bucket.take(500).then(() => order.push('c'))
    controller.abort()
    await clock.advance(2000)
    await Promise.all([a, b, c])
    expect(order).toEqual(['b-aborted', 'a', 'c'])
  })
})
