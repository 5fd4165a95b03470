import { describe, expect, it } from 'vitest'
import { InvalidMessageError } from '../../protocol/errors.js'
import { decodeSiteStatus, encodeSiteStatus, type SiteStatus } from '../../protocol/site-status.js'
import { NetworkView } from '../../agent/netview/network-view.js'
import { TrafficSampler } from '../../agent/netview/traffic.js'
import { QUIET_RATE, StatusGossip } from '../../agent/netview/status-gossip.js'

const SELF = '12D3KooWSe1fSe1fSe1fSe1fSe1fSe1fSe1fSe1fSe1fSe1fSe1f'
const A = '12D3KooWAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'
const B = '12D3KooWBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB'

function status (sentAtMs: number, over: Partial<SiteStatus> = {}): SiteStatus {
  return { sentAtMs, name: 'self-declared', agentVersion: '0.1.0', startedAtMs: 1, totals: { bytesUp: 0, bytesDown: 0, rateUp: 10, rateDown: 20 }, trees: [], peers: [], links: [], ...over }
}

function setup (configured: Array<[string, string | undefined]> = [[A, 'brisbane'], [B, undefined]], connected: string[] = [A, B], init: { maxUnconfiguredSites?: number } = {}) {
  const clock = { now: 1_000_000 }
  const conn = new Set(connected)
  const view = new NetworkView(
    { selfId: SELF, configuredPeers: () => new Map(configured), connectedPeers: () => conn },
    { staleAfterMs: 10_000, now: () => clock.now, ...init },
  )
  const site = (id: string) => view.sites(status(clock.now)).find(s => s.peerId === id)
  return { view, clock, conn, site }
}

describe('NetworkView', () => {
  it('lists itself first, then every configured site; names come from our config before the sender', () => {
    const { view, site } = setup()
    expect(view.ingest(A, encodeSiteStatus(status(5, { name: 'evil-name' })))).toBe('accepted')
    expect(view.ingest(B, encodeSiteStatus(status(5, { name: 'lab-b' })))).toBe('accepted')
    const sites = view.sites(status(1, { name: 'me' }))
    expect(sites.map(s => [s.name, s.self, s.state])).toEqual([['me', true, 'ok'], ['brisbane', false, 'ok'], ['lab-b', false, 'ok']])
    expect(site(A)?.status?.totals.rateDown).toBe(20)
  })

  it('drops a replayed or reordered status (not newer by the sender clock) and our own', () => {
    const { view, site } = setup()
    expect(view.ingest(A, encodeSiteStatus(status(100, { agentVersion: 'new' })))).toBe('accepted')
    expect(view.ingest(A, encodeSiteStatus(status(100, { agentVersion: 'same time' })))).toBe('replayed')
    expect(view.ingest(A, encodeSiteStatus(status(99, { agentVersion: 'older' })))).toBe('replayed')
    expect(site(A)?.status?.agentVersion).toBe('new')
    expect(view.ingest(SELF, encodeSiteStatus(status(200)))).toBe('self')
  })

  it('raises InvalidMessageError for bytes that are not a status', () => {
    const { view } = setup()
    expect(() => view.ingest(A, Uint8Array.of(1, 2, 3))).toThrow(InvalidMessageError)
  })

  it('ok while heard, stale when silent but connected, unreachable when silent and nobody reaches it', () => {
    const { view, clock, conn, site } = setup()
    expect(site(A)?.state).toBe('stale') // connected, never heard
    view.ingest(A, encodeSiteStatus(status(1)))
    expect(site(A)?.state).toBe('ok')
    clock.now += 10_001
    expect(site(A)?.state).toBe('stale')
    conn.delete(A)
    expect(site(A)?.state).toBe('unreachable')
    // another site, itself fresh, reports a live connection to A: A is up, just not heard by us
    view.ingest(B, encodeSiteStatus(status(2, { peers: [{ peerId: A, connected: true, rateUp: 0, rateDown: 0 }] })))
    expect(site(A)?.state).toBe('stale')
    clock.now += 10_001 // B's report is now old too
    expect(site(A)?.state).toBe('unreachable')
  })

  it('keeps at most maxUnconfiguredSites sites heard through the mesh, dropping the least recently heard', () => {
    const { view, clock } = setup([], [], { maxUnconfiguredSites: 2 })
    const ids = ['C', 'D', 'E'].map(c => `12D3KooW${c.repeat(44)}`)
    for (const id of ids) { view.ingest(id, encodeSiteStatus(status(1, { name: id.slice(-1) }))); clock.now += 1 }
    expect(view.sites(status(1)).filter(s => !s.self).map(s => s.name)).toEqual(['D', 'E'])
  })

  it('keeps a bounded rate history per site', () => {
    const v = new NetworkView({ selfId: SELF, configuredPeers: () => new Map([[A, 'a']]), connectedPeers: () => new Set() }, { staleAfterMs: 1, historyPoints: 3 })
    for (let i = 1; i <= 5; i++) v.ingest(A, encodeSiteStatus(status(i)))
    expect(v.sites(status(1))[1]?.rateHistory).toHaveLength(3)
  })
})

describe('TrafficSampler', () => {
  it('averages rates over its window, per peer and in total, and keeps a bounded per-second history', () => {
    const clock = { now: 0 }
    const t = new TrafficSampler({ windowMs: 3_000, historyPoints: 4, now: () => clock.now })
    for (let s = 0; s <= 6; s++) {
      clock.now = s * 1000
      t.sample([{ peerId: 'a', bytesUp: 1000 * s, bytesDown: 0 }, { peerId: 'b', bytesUp: 0, bytesDown: 500 * s * s }])
    }
    expect(t.rates('a')).toEqual({ up: 1000, down: 0 })
    // b's download grows: 500·(36 − 9) bytes over the last 3 s
    expect(t.rates('b')).toEqual({ up: 0, down: 4500 })
    expect(t.rates()).toEqual({ up: 1000, down: 4500 })
    expect(t.rates('unknown')).toEqual({ up: 0, down: 0 })
    expect(t.history()).toEqual([[3000, 1000, 2500], [4000, 1000, 3500], [5000, 1000, 4500], [6000, 1000, 5500]])
  })

  it('a counter that went backwards (agent restart) gives 0, not a negative rate', () => {
    const clock = { now: 0 }
    const t = new TrafficSampler({ now: () => clock.now })
    t.sample([{ peerId: 'a', bytesUp: 10_000, bytesDown: 10_000 }])
    clock.now = 1000
    t.sample([{ peerId: 'a', bytesUp: 0, bytesDown: 0 }])
    expect(t.rates()).toEqual({ up: 0, down: 0 })
    expect(t.history()).toEqual([[1000, 0, 0]])
  })
})

describe('StatusGossip', () => {
  it('sends a status when it says something new or a heartbeat after the last, not every interval', async () => {
    const clock = { now: 1_000_000 }
    let current = status(clock.now, { peers: [{ peerId: A, connected: true, rateUp: 100, rateDown: 100 }] })
    const sent: SiteStatus[] = []
    const view = new NetworkView({ selfId: SELF, configuredPeers: () => new Map(), connectedPeers: () => new Set() }, { staleAfterMs: 10_000 })
    const log = { debug: () => {} } as unknown as ConstructorParameters<typeof StatusGossip>[0]['log']
    const gossip = new StatusGossip({
      view,
      log,
      localStatus: async () => ({ ...current, sentAtMs: clock.now }),
      publish: async (bytes) => { sent.push(decodeSiteStatus(bytes)); return 1 },
    }, { intervalMs: 5_000, heartbeatMs: 30_000 }, () => clock.now)
    const tick = async (ms: number, change?: Partial<SiteStatus>): Promise<number> => {
      clock.now += ms
      if (change !== undefined) current = { ...current, ...change }
      gossip.sendIfNews()
      await new Promise(resolve => setImmediate(resolve))
      return sent.length
    }
    gossip.sendNow()
    await new Promise(resolve => setImmediate(resolve))
    expect(sent.length).toBe(1)
    // the clock, byte totals and small rates (pings, gossip) are not news
    expect(await tick(5_000, { totals: { bytesUp: 1234, bytesDown: 99, rateUp: 800, rateDown: 10 } })).toBe(1)
    expect(await tick(5_000, { peers: [{ peerId: A, connected: true, rateUp: QUIET_RATE - 1, rateDown: 0 }] })).toBe(1)
    // a peer gone, a version held, a transfer starting: news, sent at the next interval
    expect(await tick(5_000, { peers: [{ peerId: A, connected: false, rateUp: 0, rateDown: 0 }] })).toBe(2)
    expect(await tick(5_000, { trees: [{ name: 't', currentSeq: 2, newestSeq: 2, held: [1, 2] }] })).toBe(3)
    expect(await tick(5_000, { totals: { bytesUp: 0, bytesDown: 0, rateUp: 0, rateDown: 5_000_000 } })).toBe(4)
    expect(await tick(5_000, { totals: { bytesUp: 0, bytesDown: 0, rateUp: 0, rateDown: 5_100_000 } })).toBe(4)
    // nothing new: the heartbeat, 30 s after the last status sent
    for (let i = 0; i < 4; i++) expect(await tick(5_000)).toBe(4)
    expect(await tick(5_000)).toBe(5)
    expect(gossip.counts).toEqual({ sent: 5, skipped: 7 })
  })
})

