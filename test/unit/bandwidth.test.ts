import { describe, expect, it } from 'vitest'
import { parseRate, formatRate } from '../../agent/core/rate.js'
import { FairShaper } from '../../agent/bandwidth/fair-shaper.js'
import { parseDays, parseHours, parseWindow, ratesAt } from '../../agent/core/schedule.js'
import { BandwidthManager, PeerInNamedLinkError, UnknownLinkError } from '../../agent/bandwidth/manager.js'
import { emptyOverrides, type LimitOverrides } from '../../agent/bandwidth/overrides.js'
import { pacedFetch } from '../../agent/sync/paced-fetch.js'
import type { FetchResult } from '../../agent/net/chunk-client.js'
import type { ChunkRef } from '../../protocol/manifest.js'

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


/** Runs `sender` flows against a shaper until stopped; counts bytes per flow. */
function senders (shaper: FairShaper, flows: Array<{ name: string, size: number, limit?: number }>): { passed: Map<string, number>, finishedAt: Map<string, number>, stop: () => void, done: Promise<void[]> } {
  const passed = new Map<string, number>()
  const finishedAt = new Map<string, number>()
  let stopped = false
  const done = Promise.all(flows.map(async f => {
    let n = 0
    while (!stopped && (f.limit === undefined || n < f.limit)) {
      await shaper.take(f.name, f.size).catch(() => { stopped = true })
      if (stopped) return
      n += f.size
      passed.set(f.name, n)
    }
    finishedAt.set(f.name, -1)
  }))
  return { passed, finishedAt, stop: () => { stopped = true }, done }
}

describe('FairShaper', () => {
  it('holds a rate over time within one burst', async () => {
    const clock = virtualClock()
    const shaper = new FairShaper({ rate: 1_000_000, burst: 100_000, ...clock })
    const s = senders(shaper, [{ name: 'a', size: 10_000, limit: 5_000_000 }])
    await clock.advance(3000)
    // 3 s at 1 MB/s plus the initial burst
    expect(s.passed.get('a')).toBeGreaterThanOrEqual(3_000_000)
    expect(s.passed.get('a')).toBeLessThanOrEqual(3_000_000 + 100_000 + 10_000)
    await clock.advance(3000)
    await s.done
  })

  it('applies a new rate to waiting senders at once, and a lower one without a saved-up burst', async () => {
    const clock = virtualClock()
    const shaper = new FairShaper({ rate: 100_000, burst: 10_000, ...clock })
    const s = senders(shaper, [{ name: 'a', size: 10_000 }])
    await clock.advance(1000)
    let before = s.passed.get('a') ?? 0
    shaper.setRate(1_000_000)
    await clock.advance(1000)
    expect((s.passed.get('a') ?? 0) - before).toBeGreaterThanOrEqual(900_000)
    before = s.passed.get('a') ?? 0
    shaper.setRate(50_000)
    await clock.advance(2000)
    const after = (s.passed.get('a') ?? 0) - before
    expect(after).toBeGreaterThanOrEqual(90_000)
    expect(after).toBeLessThanOrEqual(100_000 + 10_000 + 10_000)
    s.stop()
    shaper.setRate(Infinity)
    await clock.advance(10)
    await s.done
  })

  it('shares a busy link equally between flows, whatever their request sizes', async () => {
    const clock = virtualClock()
    const shaper = new FairShaper({ rate: 1_000_000, burst: 64_000, ...clock })
    const s = senders(shaper, [{ name: 'big-requests', size: 250_000 }, { name: 'small-requests', size: 16_000 }, { name: 'mid', size: 60_000 }])
    await clock.advance(10_000)
    const shares = ['big-requests', 'small-requests', 'mid'].map(f => s.passed.get(f) ?? 0)
    const total = shares.reduce((a, b) => a + b, 0)
    expect(total).toBeGreaterThanOrEqual(9_900_000)
    expect(total).toBeLessThanOrEqual(10_000_000 + 64_000 + 250_000)
    for (const share of shares) expect(Math.abs(share - total / 3) / (total / 3)).toBeLessThan(0.05)
    s.stop()
    shaper.close()
    await s.done
  })

  it('gives flows shares in proportion to their weights, and lends an idle share to the busy', async () => {
    const clock = virtualClock()
    const shaper = new FairShaper({ rate: 1_000_000, burst: 64_000, ...clock })
    shaper.setWeight('current-build', 3)
    const s = senders(shaper, [{ name: 'current-build', size: 64_000, limit: 3_000_000 }, { name: 'old-compose', size: 64_000 }])
    await clock.advance(4000)
    const build = s.passed.get('current-build') ?? 0
    const old = s.passed.get('old-compose') ?? 0
    expect(build / old).toBeGreaterThan(2.7)
    expect(build / old).toBeLessThan(3.3)
    // the build is done after ~4 s: the old compose gets the whole link
    await clock.advance(4000)
    const oldLater = (s.passed.get('old-compose') ?? 0) - old
    expect(oldLater).toBeGreaterThan(3_000_000)
    s.stop()
    shaper.close()
    await s.done
  })

  it('finishes a small pull started during a large one about as fast as its fair share allows', async () => {
    const clock = virtualClock()
    const shaper = new FairShaper({ rate: 1_000_000, burst: 64_000, ...clock })
    const large = senders(shaper, [{ name: 'large', size: 64_000 }])
    await clock.advance(2000)
    let smallDoneAt: number | undefined
    const small = (async () => { for (let n = 0; n < 1_000_000; n += 64_000) await shaper.take('small', 64_000); smallDoneAt = clock.now() })()
    const start = clock.now()
    await clock.advance(3000)
    await small
    // alone it would take 1 s; sharing with one other flow, 2 s — not "after the large one"
    expect((smallDoneAt ?? Infinity) - start).toBeLessThanOrEqual(2200)
    large.stop()
    shaper.close()
    await large.done
  })

  it('does not starve a flow that ran alone below the limit when another arrives', async () => {
    const clock = virtualClock()
    const shaper = new FairShaper({ rate: 1_000_000, burst: 100_000, ...clock })
    // 'alone' passes on the fast path for a while (below the rate)
    for (let i = 0; i < 50; i++) { await shaper.take('alone', 10_000); await clock.advance(20) }
    const s = senders(shaper, [{ name: 'alone', size: 10_000 }, { name: 'newcomer', size: 10_000 }])
    await clock.advance(2000)
    const alone = s.passed.get('alone') ?? 0
    const newcomer = s.passed.get('newcomer') ?? 0
    expect(alone / newcomer).toBeGreaterThan(0.9)
    expect(alone / newcomer).toBeLessThan(1.1)
    s.stop()
    shaper.close()
    await s.done
  })

  it('serves waiters of one flow in order, honours abort, and gives back refunds', async () => {
    const clock = virtualClock()
    const shaper = new FairShaper({ rate: 1000, burst: 1000, ...clock })
    await shaper.take('f', 1000)
    const order: string[] = []
    const controller = new AbortController()
    const a = shaper.take('f', 500).then(() => order.push('a'))
    const b = shaper.take('f', 500, controller.signal).then(() => order.push('b'), () => order.push('b-aborted'))
    const c = shaper.take('f', 500).then(() => order.push('c'))
    controller.abort()
    await clock.advance(2000)
    await Promise.all([a, b, c])
    expect(order).toEqual(['b-aborted', 'a', 'c'])
    // a refund lets the next take through without waiting
    await shaper.take('f', 1000)
    shaper.refund(1000)
    let passed = false
    const d = shaper.take('f', 500).then(() => { passed = true })
    await clock.advance(0)
    expect(passed).toBe(true)
    await d
    shaper.close()
    await expect(shaper.take('f', 1)).rejects.toThrow(/closed/)
  })
})

describe('schedules', () => {
  it('parses the windows operators write', () => {
    expect([...parseDays('Mon-Fri')]).toEqual([1, 2, 3, 4, 5])
    expect([...parseDays('Fri-Mon')].sort()).toEqual([0, 1, 5, 6])
    expect([...parseDays('sat,Sun')].sort()).toEqual([0, 6])
    expect(parseDays('daily').size).toBe(7)
    expect(parseHours('08:00-18:00')).toEqual({ startMinute: 480, endMinute: 1080 })
    expect(parseHours('22:00-06:30')).toEqual({ startMinute: 1320, endMinute: 390 })
    for (const bad of ['Mo-Fr', 'Monday-', '', 'Mon,,Tue']) expect(() => parseDays(bad), bad).toThrow(/Not a schedule days value/)
    for (const bad of ['8-18', '08:00', '25:00-01:00', '10:00-10:00', '08:61-09:00']) expect(() => parseHours(bad), bad).toThrow(/Not a schedule hours value/)
  })

  it('picks the rates in force at a local time, including windows past midnight', () => {
    const base = { up: Infinity, down: 20e6 }
    const windows = [
      parseWindow({ days: 'Mon-Fri', hours: '08:00-18:00', up: '5MB/s' }),
      parseWindow({ days: 'Fri', hours: '22:00-06:00', down: '1MB/s' }),
    ]
    // 2026-11-23 is a Monday (local time)
    expect(ratesAt(base, windows, new Date(2026, 10, 23, 9, 0))).toMatchObject({ up: 5e6, down: 20e6 })
    expect(ratesAt(base, windows, new Date(2026, 10, 23, 18, 0))).toEqual({ up: Infinity, down: 20e6 })
    expect(ratesAt(base, windows, new Date(2026, 10, 28, 9, 0))).toEqual({ up: Infinity, down: 20e6 }) // Saturday
    expect(ratesAt(base, windows, new Date(2026, 10, 27, 23, 0))).toMatchObject({ down: 1e6 }) // Friday night
    expect(ratesAt(base, windows, new Date(2026, 10, 28, 5, 59))).toMatchObject({ down: 1e6 }) // Saturday early: Friday's window
    expect(ratesAt(base, windows, new Date(2026, 10, 24, 5, 0))).toEqual({ up: Infinity, down: 20e6 }) // Tuesday early: no
  })
})

describe('BandwidthManager', () => {
  const A = '12D3KooWA'
  const B = '12D3KooWB'
  const C = '12D3KooWC'

  function manager (at: { t: Date }, clock: ReturnType<typeof virtualClock>, persisted: LimitOverrides[] = []): BandwidthManager {
    return new BandwidthManager({
      global: { base: { up: Infinity, down: Infinity }, schedule: [] },
      links: [{ name: 'wan', peers: [A, B], base: { up: 10e6, down: Infinity }, schedule: [parseWindow({ days: 'Mon-Fri', hours: '08:00-18:00', up: '2MB/s' })] }],
      treeWeights: { 'lab/current': 2 },
      now: () => at.t,
      shaperClock: clock,
      tickMs: 0,
      persist: async o => { persisted.push(structuredClone(o)) },
    })
  }

  it('switches a link to its schedule window when the clock enters it, and back', async () => {
    const at = { t: new Date(2026, 10, 23, 7, 59, 30) } // Monday before 08:00
    const clock = virtualClock()
    const bw = manager(at, clock)
    const wan = (): ReturnType<BandwidthManager['status']>[number] => bw.status().find(l => l.name === 'wan') as ReturnType<BandwidthManager['status']>[number]
    expect(wan().limit.up).toBe(10e6)
    // a real transfer through the link measures the rate, not just the setting
    let sent = 0
    let stop = false
    const sender = (async () => { while (!stop) { await bw.paceUpload(A, 100_000).catch(() => { stop = true }); sent += 100_000 } })()
    await clock.advance(2000)
    const before = sent
    await clock.advance(2000)
    expect((sent - before) / 2).toBeGreaterThan(9.5e6)
    at.t = new Date(2026, 10, 23, 8, 0, 1)
    bw.tick()
    expect(wan()).toMatchObject({ limit: { up: 2e6 }, window: 'Mon-Fri 08:00-18:00' })
    await clock.advance(1000) // spend the burst saved at the old rate
    const inWindow = sent
    await clock.advance(4000)
    expect((sent - inWindow) / 4).toBeGreaterThan(1.9e6)
    expect((sent - inWindow) / 4).toBeLessThan(2.1e6)
    at.t = new Date(2026, 10, 23, 18, 0, 0)
    bw.tick()
    expect(wan().limit.up).toBe(10e6)
    expect(wan().window).toBeUndefined()
    stop = true
    bw.close()
    await sender
  })

  it('overrides a direction at runtime over config and schedule, persists it, and resets', async () => {
    const at = { t: new Date(2026, 10, 23, 9, 0) } // in the window
    const clock = virtualClock()
    const persisted: LimitOverrides[] = []
    const bw = manager(at, clock, persisted)
    const link = await bw.change({ link: 'wan', up: '1MB/s' })
    expect(link).toMatchObject({ limit: { up: 1e6, down: null } })
    expect(link.override).toEqual({ up: '1MB/s' })
    // a later change of the other direction keeps this one
    expect((await bw.change({ link: 'wan', down: '3MB/s', up: undefined })).override).toEqual({ up: '1MB/s', down: '3MB/s' })
    expect(persisted.at(-1)?.links).toEqual({ wan: { up: '1MB/s', down: '3MB/s' } })
    const peer = await bw.change({ peer: C, down: '80Mbit/s' })
    expect(peer).toMatchObject({ kind: 'peer', limit: { down: 10e6 } })
    const global = await bw.change({ up: 'unlimited', down: '50MB/s' })
    expect(global).toMatchObject({ kind: 'global', limit: { up: null, down: 50e6 } })
    expect(persisted.at(-1)).toMatchObject({ global: { up: 'unlimited', down: '50MB/s' }, peers: { [C]: { down: '80Mbit/s' } } })
    expect((await bw.change({ link: 'wan', reset: true })).limit.up).toBe(2e6) // back to the schedule
    expect(persisted.at(-1)?.links).toEqual({})
    await expect(bw.change({ link: 'nope', up: '1MB/s' })).rejects.toBeInstanceOf(UnknownLinkError)
    await expect(bw.change({ peer: A, up: '1MB/s' })).rejects.toBeInstanceOf(PeerInNamedLinkError)
    await expect(bw.change({ link: 'wan', up: 'fast' })).rejects.toThrow(/Not a rate/)
    await expect(bw.change({ link: 'wan' })).rejects.toThrow(/--up, --down or --reset/)
    bw.close()
  })

  it('starts from persisted overrides', () => {
    const overrides = { ...emptyOverrides(), links: { wan: { down: '3MB/s' } }, treeWeights: { 'x/y': 5 } }
    const bw = new BandwidthManager({
      global: { base: { up: Infinity, down: Infinity }, schedule: [] },
      links: [{ name: 'wan', peers: [A], base: { up: 10e6, down: Infinity }, schedule: [] }],
      overrides,
      tickMs: 0,
    })
    expect(bw.status().find(l => l.name === 'wan')?.limit).toEqual({ up: 10e6, down: 3e6 })
    expect(bw.weights()).toEqual({ 'x/y': 5 })
    bw.close()
  })

  it('paces two peers of one link to equal shares of its uplink', async () => {
    const at = { t: new Date(2026, 10, 23, 20, 0) }
    const clock = virtualClock()
    const bw = manager(at, clock)
    const sent = new Map<string, number>()
    let stop = false
    const run = async (peer: string): Promise<void> => { while (!stop) { await bw.paceUpload(peer, 60_000).catch(() => { stop = true }); sent.set(peer, (sent.get(peer) ?? 0) + 60_000) } }
    const runs = [run(A), run(B)]
    await clock.advance(10_000)
    const a = sent.get(A) ?? 0
    const b = sent.get(B) ?? 0
    expect(Math.abs(a - b) / (a + b)).toBeLessThan(0.02)
    expect(a + b).toBeGreaterThan(99e6)
    expect(a + b).toBeLessThan(100e6 + 2.5e6 + 120_000)
    stop = true
    bw.close()
    await Promise.all(runs)
  })
})

describe('pacedFetch', () => {
  const want = (n: number): ChunkRef => ({ id: new Uint8Array(32).fill(n), size: 50_000 })

  it('asks in small paced groups, merges the results and refunds what was not delivered', async () => {
    const paced: number[] = []
    const refunded: number[] = []
    const groups: number[] = []
    const pacer = { downloadLimited: () => true, paceDownload: async (_p: string, tree: string, bytes: number) => { expect(tree).toBe('t'); paced.push(bytes) }, refundDownload: (_p: string, bytes: number) => { refunded.push(bytes) } }
    const fetch = async (_peer: string, wants: ChunkRef[], options: { onBlock: (id: Uint8Array, b: Uint8Array) => Promise<void>, onFailure?: (f: FetchResult['failed'][number]) => void }): Promise<FetchResult> => {
      groups.push(wants.length)
      const result: FetchResult = { delivered: 0, bytes: 0, failed: [] }
      for (const w of wants) {
        if (w.id[0] === 3) { const f = { id: w.id, reason: 'dont-have' as const }; result.failed.push(f); options.onFailure?.(f); continue }
        await options.onBlock(w.id, new Uint8Array(w.size)); result.delivered++; result.bytes += w.size
      }
      return result
    }
    const delivered: number[] = []
    const result = await pacedFetch(fetch, pacer, 't', 128 * 1024)('p', [1, 2, 3, 4, 5, 6].map(want), { onBlock: async id => { delivered.push(id[0] as number) } })
    expect(groups).toEqual([2, 2, 2])
    expect(paced).toHaveLength(3)
    expect(result).toMatchObject({ delivered: 5, bytes: 250_000 })
    expect(result.failed.map(f => f.id[0])).toEqual([3])
    expect(refunded).toEqual([50_048])
    expect(delivered.sort()).toEqual([1, 2, 4, 5, 6])
  })

  it('stops asking a peer that went away and fails the rest with the same reason', async () => {
    const pacer = { downloadLimited: () => true, paceDownload: async () => {}, refundDownload: () => {} }
    let calls = 0
    const fetch = async (_peer: string, wants: ChunkRef[], options: { onFailure?: (f: FetchResult['failed'][number]) => void }): Promise<FetchResult> => {
      calls++
      const failed = wants.map(w => ({ id: w.id, reason: 'disconnected' as const }))
      for (const f of failed) options.onFailure?.(f)
      return { delivered: 0, bytes: 0, failed }
    }
    const result = await pacedFetch(fetch, pacer, 't', 60_000)('p', [1, 2, 3, 4].map(want), { onBlock: async () => {} })
    expect(calls).toBe(1)
    expect(result.failed.map(f => f.reason)).toEqual(['disconnected', 'disconnected', 'disconnected', 'disconnected'])
  })
})
