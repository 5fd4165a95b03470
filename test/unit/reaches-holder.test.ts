import { describe, expect, it } from 'vitest'
import { reachesHolderWithout } from '../../agent/netview/network-view.js'
import type { SiteStatus } from '../../protocol/site-status.js'

// Whether a site syncing a version can fetch it from someone other than us, by the gossiped statuses.

function status (name: string, peers: string[], held: number[] = []): SiteStatus {
  return {
    sentAtMs: 0, name, agentVersion: 'test', startedAtMs: 0,
    totals: { bytesUp: 0, bytesDown: 0, rateUp: 0, rateDown: 0 },
    trees: held.length === 0 ? [] : [{ name: 'T', held, currentSeq: held[held.length - 1] }],
    peers: peers.map(peerId => ({ peerId, connected: true, rateUp: 0, rateDown: 0 })),
    links: [],
  }
}

function view (statuses: Record<string, SiteStatus>): { statusOf: (id: string) => SiteStatus | undefined } {
  return { statusOf: id => statuses[id] }
}

describe('reachesHolderWithout', () => {
  it('a lab connected only to the hub cannot fetch v2 without the hub', () => {
    const v = view({ lab: status('lab', ['hub']), hub: status('hub', ['origin', 'lab'], [1]), origin: status('origin', ['hub'], [1, 2]) })
    expect(reachesHolderWithout(v, 'lab', 'hub', 'T', 2)).toBe(false)
  })

  it('a site also connected to the origin (or any holder of v2) can', () => {
    const v = view({ lab: status('lab', ['hub', 'origin']), origin: status('origin', ['hub', 'lab'], [1, 2]) })
    expect(reachesHolderWithout(v, 'lab', 'hub', 'T', 2)).toBe(true)
    const viaOther = view({ lab: status('lab', ['hub', 'lab2']), lab2: status('lab2', ['origin'], [2]) })
    expect(reachesHolderWithout(viaOther, 'lab', 'hub', 'T', 2)).toBe(true)
  })

  it('not knowing counts as yes: no status from the site, or from one of its peers', () => {
    expect(reachesHolderWithout(view({}), 'lab', 'hub', 'T', 2)).toBe(true)
    expect(reachesHolderWithout(view({ lab: status('lab', ['hub', 'stranger']) }), 'lab', 'hub', 'T', 2)).toBe(true)
  })
})
