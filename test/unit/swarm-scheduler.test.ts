import { describe, expect, it } from 'vitest'
import { chunkIdOf, toHex } from '../../protocol/chunk-id.js'
import { SwarmScheduler, type WantedChunk } from '../../agent/sync/swarm-scheduler.js'

const chunks = (n: number, size = 1000): WantedChunk[] => Array.from({ length: n }, (_, i) => ({ id: chunkIdOf(Buffer.from(`chunk-${i}`)), size }))

function scheduler (selfId: string, now: { t: number }, windowBytes = 1e9): SwarmScheduler {
  return new SwarmScheduler({ selfId, windowBytes, ownerGraceMs: 1000, ownerStallMs: 500, now: () => now.t })
}

describe('SwarmScheduler', () => {
  it('alone with the origin: asks the origin for everything, within the window', () => {
    const now = { t: 0 }
    const s = scheduler('A', now, 5000)
    s.setNeeded(chunks(20))
    s.setPeer('origin', true)
    const first = s.next()
    expect(first).toHaveLength(1)
    expect(first[0]!.chunks).toHaveLength(5)
    expect(s.next()).toEqual([]) // window full
    for (const c of first[0]!.chunks) s.received(c.id, 'origin')
    expect(s.next()[0]!.chunks).toHaveLength(5)
  })

  it('asks for chunks in the order they are needed (a file front to back): alone, and within its own share beside another site', () => {
    const now = { t: 0 }
    const wanted = chunks(60)
    const index = new Map(wanted.map((c, i) => [toHex(c.id), i]))
    const alone = scheduler('A', now)
    alone.setNeeded(wanted)
    alone.setPeer('origin', true)
    expect(alone.next()[0]!.chunks.map(c => index.get(toHex(c.id)))).toEqual(wanted.map((_, i) => i))
    const shared = scheduler('A', now)
    shared.setNeeded(wanted)
    shared.setPeer('origin', true)
    shared.setPeer('B', false)
    const asked = shared.next().filter(a => a.peerId === 'origin').flatMap(a => a.chunks.map(c => index.get(toHex(c.id)) as number))
    expect(asked.length).toBeGreaterThan(10)
    expect(asked.length).toBeLessThan(50) // B's share waits for B during the grace period
    expect(asked).toEqual([...asked].sort((a, b) => a - b))
    expect(asked.every(i => shared.ownerOf(toHex(wanted[i]!.id)) === 'A')).toBe(true)
  })

  it('splits the origin load between concurrent syncing sites (each chunk owned by exactly one)', () => {
    const now = { t: 0 }
    const sites = ['A', 'B', 'C', 'D']
    const wanted = chunks(400)
    const fromOrigin = new Map<string, number>()
    for (const self of sites) {
      const s = scheduler(self, now)
      s.setNeeded(wanted)
      s.setPeer('origin', true)
      for (const other of sites) if (other !== self) s.setPeer(other, false)
      for (const a of s.next()) if (a.peerId === 'origin') for (const c of a.chunks) fromOrigin.set(toHex(c.id), (fromOrigin.get(toHex(c.id)) ?? 0) + 1)
    }
    // during the grace period every chunk is asked of the origin by exactly one site
    expect(fromOrigin.size).toBe(400)
    expect([...fromOrigin.values()].every(n => n === 1)).toBe(true)
  })

  it('takes announced chunks from partial holders before the origin', () => {
    const now = { t: 0 }
    const s = scheduler('A', now)
    const wanted = chunks(50)
    s.setNeeded(wanted)
    s.setPeer('origin', true)
    s.setPeer('B', false)
    const ownedByB = wanted.filter(c => s.ownerOf(toHex(c.id)) === 'B')
    s.peerHas('B', ownedByB.map(c => c.id))
    const plan = new Map(s.next().map(a => [a.peerId, a.chunks.length]))
    expect(plan.get('B')).toBe(ownedByB.length)
    expect(plan.get('origin')).toBe(50 - ownedByB.length)
  })

  it('falls back to the origin when the owner stalls or leaves, and re-queues a lost peer\'s chunks', () => {
    const now = { t: 0 }
    const s = scheduler('A', now)
    const wanted = chunks(50)
    s.setNeeded(wanted)
    s.setPeer('origin', true)
    s.setPeer('B', false)
    const mine = s.next().flatMap(a => a.chunks).length
    expect(mine).toBeLessThan(50)
    now.t = 2000 // past grace; B announced nothing for > stall
    expect(s.next().flatMap(a => a.chunks).length).toBe(50 - mine)
    // origin disconnects: all its in-flight chunks come back
    expect(s.removePeer('origin')).toHaveLength(50)
    expect(s.starved).toBe(true)
    s.setPeer('C', true)
    expect(s.next().flatMap(a => a.chunks).length).toBe(50)
  })

  it('DONT_HAVE and bans steer requests elsewhere', () => {
    const now = { t: 5000 }
    const s = scheduler('A', now)
    const [c] = chunks(1)
    s.setNeeded([c!])
    s.setPeer('liar', true)
    expect(s.next()[0]!.peerId).toBe('liar')
    s.ban('liar')
    expect(s.next()).toEqual([])
    s.setPeer('honest', true)
    s.setPeer('partial', false)
    s.peerHas('partial', [c!.id])
    expect(s.next()[0]!.peerId).toBe('partial')
    s.failed(c!.id, 'partial', 'dont-have')
    now.t += 1000 // if 'partial' owns the chunk, we wait for it until it stalls
    expect(s.next()[0]!.peerId).toBe('honest')
    s.received(c!.id, 'honest')
    expect(s.remaining).toBe(0)
  })

  it('unreachable(): once nothing is in flight, counts the needed chunks no peer can be asked for', () => {
    const now = { t: 5000 }
    const s = scheduler('A', now)
    const [a, b] = chunks(2)
    s.setNeeded([a!, b!])
    expect(s.unreachable()).toEqual({ chunks: 2, bytes: 2000, usablePeers: 0 })
    s.setPeer('origin', true)
    expect(s.unreachable()).toBeUndefined()
    const asked = s.next()[0]!
    expect(s.unreachable()).toBeUndefined() // in flight: still moving
    s.failed(a!.id, 'origin', 'dont-have')
    expect(s.unreachable()).toBeUndefined()
    s.failed(b!.id, 'origin', 'error')
    expect(asked.chunks).toHaveLength(2)
    expect(s.unreachable()).toEqual({ chunks: 1, bytes: 1000, usablePeers: 1 })
    s.setPeer('hub', false)
    s.peerHas('hub', [a!.id])
    expect(s.unreachable()).toBeUndefined()
  })

  it('a partial peer that said DONT_HAVE is asked again once it holds the whole version', () => {
    const now = { t: 5000 }
    const s = scheduler('A', now)
    const [c] = chunks(1)
    s.setNeeded([c!])
    s.setPeer('hub', false)
    s.peerHas('hub', [c!.id])
    expect(s.next()[0]!.peerId).toBe('hub')
    s.failed(c!.id, 'hub', 'dont-have')
    expect(s.next()).toEqual([])
    expect(s.unreachable()).toEqual({ chunks: 1, bytes: 1000, usablePeers: 1 })
    s.setPeer('hub', true) // its heads: complete
    expect(s.next()[0]!.peerId).toBe('hub')
  })

  it('does not let a slow owner hold a fast site hostage: idle past idleWaitMs, it takes the rest from the origin', () => {
    const now = { t: 0 }
    const s = new SwarmScheduler({ selfId: 'A', windowBytes: 1e9, ownerGraceMs: 1000, ownerStallMs: 60_000, idleWaitMs: 2000, now: () => now.t })
    const wanted = chunks(100)
    s.setNeeded(wanted)
    s.setPeer('origin', true)
    s.setPeer('slow', false)
    const mine = s.next().flatMap(a => a.chunks)
    for (const c of mine) s.received(c.id, 'origin')
    now.t = 1500
    s.peerHas('slow', [wanted.find(c => s.ownerOf(toHex(c.id)) === 'slow')!.id]) // slow is alive, just slow
    // the one chunk slow announced comes from slow; nothing it owns comes from the origin yet (idle clock starts)
    expect(s.next().map(a => [a.peerId, a.chunks.length])).toEqual([['slow', 1]])
    expect(s.next()).toEqual([])
    now.t = 3600
    const late = s.next()
    expect(late.map(a => a.peerId)).toEqual(['origin'])
    expect(late[0]!.chunks.length).toBe(100 - mine.length - 1)
  })

  it('stays patient while the origin still works on its own requests (a limited origin must not become a star)', () => {
    const now = { t: 0 }
    const s = new SwarmScheduler({ selfId: 'A', windowBytes: 1e9, ownerGraceMs: 1000, ownerStallMs: 60_000, idleWaitMs: 2000, now: () => now.t })
    const wanted = chunks(100)
    s.setNeeded(wanted)
    s.setPeer('origin', true)
    s.setPeer('other', false)
    const mine = s.next().flatMap(a => a.chunks) // my share, asked of the origin, not yet delivered
    expect(mine.length).toBeGreaterThan(0)
    now.t = 1500
    s.peerHas('other', [wanted.find(c => s.ownerOf(toHex(c.id)) === 'other')!.id]) // the other site is fetching its share
    expect(s.next().map(a => [a.peerId, a.chunks.length])).toEqual([['other', 1]])
    expect(s.next()).toEqual([])
    now.t = 10_000 // long past idleWaitMs, but the origin is still serving my requests
    expect(s.next()).toEqual([])
    for (const c of mine) s.received(c.id, 'origin')
    expect(s.next()).toEqual([]) // idle clock starts once nothing waits at the origin
    now.t = 12_100
    const late = s.next()
    expect(late.map(a => a.peerId)).toEqual(['origin'])
    expect(late[0]!.chunks.length).toBe(100 - mine.length - 1)
  })

  it('waits up to ownerGraceMs for an owner that is still planning, even when idle', () => {
    const now = { t: 0 }
    const s = new SwarmScheduler({ selfId: 'A', windowBytes: 1e9, ownerGraceMs: 10_000, ownerStallMs: 3000, idleWaitMs: 2000, now: () => now.t })
    const wanted = chunks(60)
    s.setNeeded(wanted)
    s.setPeer('origin', true)
    s.setPeer('planning', false) // beacon only: syncing, no chunk announced yet
    const mine = s.next().flatMap(a => a.chunks)
    for (const c of mine) s.received(c.id, 'origin')
    now.t = 5000
    expect(s.next()).toEqual([])
    now.t = 8000 // idle for 3 s, but the owner may still be planning
    expect(s.next()).toEqual([])
    now.t = 10_000
    expect(s.next().flatMap(a => a.chunks).length).toBe(60 - mine.length)
  })
  it('adapts each peer\'s window to the rate it delivers at, so a slow holder is not buried under requests', () => {
    const now = { t: 0 }
    const s = new SwarmScheduler({ selfId: 'A', windowBytes: 8_000_000, adaptiveWindow: { minBytes: 100_000, seconds: 1 }, ownerGraceMs: 0, ownerStallMs: 60_000, now: () => now.t })
    const wanted = chunks(2000, 10_000)
    s.setNeeded(wanted)
    s.setPeer('fast', false)
    s.setPeer('slow', false)
    s.peerHas('fast', wanted.map(c => c.id))
    s.peerHas('slow', wanted.map(c => c.id))
    const outstanding = new Map<string, WantedChunk[]>([['fast', []], ['slow', []]])
    const take = (): void => { for (const a of s.next()) outstanding.get(a.peerId)!.push(...a.chunks) }
    take()
    // before any measurement both start at twice the minimum
    expect(outstanding.get('fast')!.length).toBe(20)
    expect(outstanding.get('slow')!.length).toBe(20)
    // 'fast' delivers 1 MB/s, 'slow' 50 kB/s, for 3 s (every 100 ms: 10 chunks vs one every 200 ms)
    for (let step = 1; step <= 30; step++) {
      now.t = step * 100
      for (const c of outstanding.get('fast')!.splice(0, 10)) s.received(c.id, 'fast')
      if (step % 2 === 0) for (const c of outstanding.get('slow')!.splice(0, 1)) s.received(c.id, 'slow')
      take()
    }
    const bytes = (peer: string): number => outstanding.get(peer)!.reduce((n, c) => n + c.size, 0)
    // about one second of each peer's rate, and never below the minimum (topped up once a quarter of it is free)
    expect(bytes('fast')).toBeGreaterThan(700_000)
    expect(bytes('fast')).toBeLessThan(1_400_000)
    expect(bytes('slow')).toBeLessThanOrEqual(200_000)
    expect(bytes('slow')).toBeGreaterThanOrEqual(75_000)
  })
})

describe('HAVE cadence', () => {
  it('announces every 200 ms among a few syncing sites and at most once a second among many', async () => {
    const { haveIntervalMs } = await import('../../agent/sync/version-sync.js')
    expect([0, 1, 4, 5, 8, 16, 40].map(haveIntervalMs)).toEqual([200, 200, 200, 400, 400, 800, 1000])
  })
  it('tops a busy peer\'s window up in batches, not at every chunk it delivers', () => {
    const s = new SwarmScheduler({ selfId: 'A', windowBytes: 1_000_000, ownerGraceMs: 0, ownerStallMs: 60_000 })
    const wanted = chunks(1000, 4_000)
    s.setNeeded(wanted)
    s.setPeer('origin', true)
    const first = s.next().flatMap(a => a.chunks)
    expect(first.length).toBe(250)
    // a few deliveries free less than a quarter of the window: no new WANT yet
    for (const c of first.slice(0, 10)) s.received(c.id, 'origin')
    expect(s.next()).toEqual([])
    // a quarter free: one top-up with everything that fits
    for (const c of first.slice(10, 63)) s.received(c.id, 'origin')
    expect(s.next().flatMap(a => a.chunks).length).toBe(63)
  })
})

describe('ownership needs a way around us', () => {
  it('a syncing site that can only fetch through us owns nothing: we take every chunk from the origin at once', () => {
    const now = { t: 0 }
    const wanted = chunks(40)
    const hub = new SwarmScheduler({ selfId: 'hub', windowBytes: 1e9, ownerGraceMs: 10_000, ownerStallMs: 5000, now: () => now.t, canOwn: peer => peer !== 'lab' })
    hub.setNeeded(wanted)
    hub.setPeer('origin', true)
    hub.setPeer('lab', false)
    const asked = hub.next().filter(a => a.peerId === 'origin').flatMap(a => a.chunks)
    expect(asked).toHaveLength(40)
    // without the rule the lab owns part of the version and the hub waits for it
    const waiting = new SwarmScheduler({ selfId: 'hub', windowBytes: 1e9, ownerGraceMs: 10_000, ownerStallMs: 5000, now: () => now.t })
    waiting.setNeeded(wanted)
    waiting.setPeer('origin', true)
    waiting.setPeer('lab', false)
    expect(waiting.next().filter(a => a.peerId === 'origin').flatMap(a => a.chunks).length).toBeLessThan(40)
  })
})
