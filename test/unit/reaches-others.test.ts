import { describe, expect, it } from 'vitest'
import { reachesOthers } from '../../agent/netview/network-view.js'
import type { SiteStatus } from '../../protocol/site-status.js'

// Whether a site syncing a version can fetch from anyone but us, by its gossiped status: only then may it own
// a share of the version (swarm-scheduler canOwn).

function status (name: string, peers: Array<[string, boolean]>): SiteStatus {
  return {
    sentAtMs: 0, name, agentVersion: 'test', startedAtMs: 0,
    totals: { bytesUp: 0, bytesDown: 0, rateUp: 0, rateDown: 0 },
    trees: [],
    peers: peers.map(([peerId, connected]) => ({ peerId, connected, rateUp: 0, rateDown: 0 })),
    links: [],
  }
}

const view = (statuses: Record<string, SiteStatus>): { statusOf: (id: string) => SiteStatus | undefined } => ({ statusOf: id => statuses[id] })

describe('reachesOthers', () => {
  it('a lab connected only to the hub fetches everything through the hub', () => {
    expect(reachesOthers(view({ lab: status('lab', [['hub', true], ['origin', false]]) }), 'lab', 'hub')).toBe(false)
  })

  it('a site also connected to another site can fetch its share there', () => {
    expect(reachesOthers(view({ lab: status('lab', [['hub', true], ['origin', true]]) }), 'lab', 'hub')).toBe(true)
  })

  it('no status heard from the site counts as yes', () => {
    expect(reachesOthers(view({}), 'lab', 'hub')).toBe(true)
  })
})
