import { describe, expect, it } from 'vitest'
import { PeerBans } from '../../agent/net/bans.js'
import { BAD_CHUNK_STRIKES, PeerStats } from '../../agent/net/peer-stats.js'

describe('PeerBans', () => {
  it('expires, and doubles on each repeat up to the cap', () => {
    let now = 1_000_000
    const bans = new PeerBans({ banMs: 1000, maxBanMs: 3000, now: () => now })
    const seen: string[] = []
    bans.onBan(p => seen.push(p))
    expect(bans.isBanned('p')).toBe(false)
    expect(bans.ban('p', 'lied').untilMs).toBe(now + 1000)
    expect(bans.isBanned('p')).toBe(true)
    now += 999
    expect(bans.bannedUntil('p')).toBe(1_001_000)
    now += 1
    expect(bans.isBanned('p')).toBe(false)
    expect(bans.ban('p', 'lied again').untilMs).toBe(now + 2000)
    expect(bans.ban('p', 'and again').untilMs).toBe(now + 3000)
    expect(bans.snapshot().p).toMatchObject({ count: 3, reason: 'and again' })
    expect(seen).toEqual(['p', 'p', 'p'])
    // saved and restored (a restart): still banned, and the next ban still doubles
    const again = new PeerBans({ banMs: 1000, maxBanMs: 60_000, now: () => now })
    expect(again.restore(JSON.parse(JSON.stringify(bans.snapshot())))).toBe(1)
    expect(again.bannedUntil('p')).toBe(now + 3000)
    expect(again.restore({ q: { untilMs: 'soon' }, r: null, s: { untilMs: 1, count: 1, reason: 7 } })).toBe(0)
    now += 3000
    expect(again.ban('p', 'fourth').untilMs).toBe(now + 8000)
  })
})

describe('strike weights', () => {
  it('four bad chunks exhaust the default budget; crossing a multiple calls the handler once', () => {
    const over: number[] = []
    const stats = new PeerStats({ onBudgetExceeded: (_p, n) => over.push(n) })
    for (let i = 0; i < 3; i++) stats.strike('p', 'bad chunk', BAD_CHUNK_STRIKES)
    stats.strike('p', 'frame')
    expect(over).toEqual([])
    stats.strike('p', 'bad chunk', BAD_CHUNK_STRIKES)
    expect(over).toEqual([17])
  })
})
