import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { StallWatch, stallToken } from '../../agent/daemon/stall-watch.js'

// A running sync let finish while newer versions arrive is given up when it stops moving for the stall time,
// however often newer versions are announced meanwhile (the 1,000-version soak's stuck lab).

beforeEach(() => { vi.useFakeTimers() })
afterEach(() => { vi.useRealTimers() })

describe('StallWatch', () => {
  it('fires after the stall time without progress, although a newer version is announced every 2 s', () => {
    const stalled: object[] = []
    const watch = new StallWatch<object>(15_000, r => stalled.push(r))
    const running = {}
    for (let t = 0; t < 14_000; t += 2000) { watch.watch(running, () => 'fetching/100/3', () => true); vi.advanceTimersByTime(2000) }
    expect(stalled).toEqual([])
    vi.advanceTimersByTime(2000)
    expect(stalled).toEqual([running])
  })

  it('does not fire while the sync moves, nor for a sync that ended', () => {
    const stalled: object[] = []
    const watch = new StallWatch<object>(15_000, r => stalled.push(r))
    let bytes = 0
    const moving = {}
    watch.watch(moving, () => `fetching/${bytes}/0`, () => true)
    for (let i = 0; i < 10; i++) { bytes += 1000; vi.advanceTimersByTime(15_000) }
    expect(stalled).toEqual([])
    let running = true
    const ended = {}
    watch.watch(ended, () => 'fetching/5/0', () => running)
    running = false
    vi.advanceTimersByTime(60_000)
    expect(stalled).toEqual([])
  })

  it('watches the next running sync afresh, and stop() disarms it', () => {
    const stalled: object[] = []
    const watch = new StallWatch<object>(15_000, r => stalled.push(r))
    const first = {}
    const second = {}
    watch.watch(first, () => 'x', () => true)
    vi.advanceTimersByTime(10_000)
    watch.watch(second, () => 'y', () => true)
    vi.advanceTimersByTime(10_000)
    expect(stalled).toEqual([])
    vi.advanceTimersByTime(5000)
    expect(stalled).toEqual([second])
    watch.watch(first, () => 'x', () => true)
    watch.stop()
    vi.advanceTimersByTime(60_000)
    expect(stalled).toEqual([second])
  })
})

describe('stallToken', () => {
  it('a fetch that moves no byte or chunk looks the same; planning and finalizing never do', () => {
    const fetching = { phase: 'fetching', bytesDone: 10, chunksDone: 1 }
    expect(stallToken(fetching, 1)).toBe(stallToken(fetching, 20_000))
    expect(stallToken({ ...fetching, bytesDone: 11 }, 1)).not.toBe(stallToken(fetching, 1))
    for (const phase of ['planning', 'finalizing']) expect(stallToken({ ...fetching, phase }, 1)).not.toBe(stallToken({ ...fetching, phase }, 15_001))
  })
})
