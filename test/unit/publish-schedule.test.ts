import { describe, expect, it } from 'vitest'
import { PublishSchedule, type PublishOutcome, type Timers } from '../../agent/publish/publish-schedule.js'

/** Virtual time: timers fire only when the test advances the clock. */
function virtualTimers (): Timers & { advance: (ms: number) => Promise<void> } {
  let now = 1_000_000
  let next = 1
  const pending = new Map<number, { at: number, fn: () => void }>()
  return {
    now: () => now,
    setTimeout: (fn, ms) => { const id = next++; pending.set(id, { at: now + ms, fn }); return id },
    clearTimeout: id => { pending.delete(id as number) },
    advance: async (ms) => {
      const end = now + ms
      for (;;) {
        const due = [...pending].filter(([, t]) => t.at <= end).sort((a, b) => a[1].at - b[1].at)[0]
        if (due === undefined) break
        pending.delete(due[0])
        now = due[1].at
        due[1].fn()
        for (let i = 0; i < 5; i++) await Promise.resolve() // let a publish's promise chain settle
      }
      now = end
    },
  }
}

/** Lets a released publish's promise chain run to its end. */
async function settle (): Promise<void> { await new Promise(resolve => setImmediate(resolve)) }

function schedule (t: ReturnType<typeof virtualTimers>, publish?: () => Promise<PublishOutcome>): { s: PublishSchedule, calls: number[] } {
  const calls: number[] = []
  let seq = 0
  const s = new PublishSchedule({
    quietMs: 5_000,
    maxDelayMs: 60_000,
    timers: t,
    publish: async () => { calls.push(t.now()); return await (publish?.() ?? Promise.resolve({ seq: ++seq })) },
  })
  return { s, calls }
}

describe('publish on change: when a watched source is published', () => {
  it('once the source has been quiet for `quiet` after its last change', async () => {
    const t = virtualTimers()
    const { s, calls } = schedule(t)
    const start = t.now()
    s.changed()
    await t.advance(3_000)
    s.changed() // the quiet period starts again
    await t.advance(4_999)
    expect(calls).toEqual([])
    expect(s.state().phase).toBe('pending')
    await t.advance(1)
    expect(calls).toEqual([start + 8_000])
    expect(s.state()).toMatchObject({ phase: 'idle', changes: 2, publishes: 1, last: { seq: 1 } })
  })

  it('after `maxDelay` of constant change, and then again for the changes that keep coming', async () => {
    const t = virtualTimers()
    const { s, calls } = schedule(t)
    const start = t.now()
    for (let i = 0; i < 100; i++) { s.changed(); await t.advance(1_000) }
    expect(calls).toEqual([start + 60_000])
    // changes after that publish count from their own first change
    expect(s.state().phase).toBe('pending')
    await t.advance(30_000)
    // the changes went on until 99 s: the second publish comes 5 s after the last (before its own 60 s ran out)
    expect(calls).toEqual([start + 60_000, start + 104_000])
  })

  it('never two publishes of one tree at once: changes during a publish wait for it', async () => {
    const t = virtualTimers()
    let release: () => void = () => {}
    let inFlight = 0
    let maxInFlight = 0
    const { s, calls } = schedule(t, async () => {
      inFlight++; maxInFlight = Math.max(maxInFlight, inFlight)
      await new Promise<void>(resolve => { release = resolve })
      inFlight--
      return { seq: calls.length }
    })
    s.now()
    await t.advance(0)
    expect(s.state().phase).toBe('publishing')
    for (let i = 0; i < 20; i++) { s.changed(); await t.advance(1_000) }
    expect(calls).toHaveLength(1)
    release()
    await settle()
    await t.advance(5_000)
    expect(calls).toHaveLength(2)
    release()
    await settle()
    expect(maxInFlight).toBe(1)
    expect(s.state().phase).toBe('idle')
  })

  it('a failed publish is retried after quiet, then with a doubling delay, and stop() aborts', async () => {
    const t = virtualTimers()
    let fail = 3
    const { s, calls } = schedule(t, async () => { if (fail-- > 0) throw new Error('source gone'); return { seq: 7 } })
    const start = t.now()
    s.now()
    await t.advance(100_000)
    expect(calls.map(c => c - start)).toEqual([0, 5_000, 15_000, 35_000])
    expect(s.state()).toMatchObject({ phase: 'idle', publishes: 1, last: { seq: 7 } })
    await s.stop()
    s.changed()
    await t.advance(100_000)
    expect(calls).toHaveLength(4)
  })
})

describe('label templates and durations', () => {
  it('expands {date}, {time} and {seq}; refuses an unknown placeholder', async () => {
    const { expandLabel, checkLabelTemplate } = await import('../../agent/publish/publish-schedule.js')
    expect(expandLabel('RDO-{date}.{seq}', { seq: 42, nowMs: Date.UTC(2026, 11, 7, 23, 5, 9) })).toBe('RDO-20261207.42')
    expect(expandLabel('{date}T{time}Z', { seq: 1, nowMs: Date.UTC(2026, 0, 2, 3, 4, 5) })).toBe('20260102T030405Z')
    expect(() => checkLabelTemplate('build-{id}')).toThrow(/unknown \{id\}/)
  })

  it('parses durations as written in config.toml', async () => {
    const { parseDuration } = await import('../../agent/core/duration.js')
    expect([parseDuration('5s'), parseDuration('5m'), parseDuration('250ms'), parseDuration('1.5h')]).toEqual([5_000, 300_000, 250, 5_400_000])
    expect(() => parseDuration('5 minutes')).toThrow(/a duration such as/)
  })
})
