import { describe, expect, it } from 'vitest'
import type { GossipSub } from '@libp2p/gossipsub'
import { HaveGossip } from '../../agent/sync/have-gossip.js'
import { createLogger } from '../../agent/log.js'
import { haveTopic } from '../../protocol/have.js'

/** The parts of gossipsub HaveGossip uses, recording topic joins and leaves. */
function fakePubsub (): { pubsub: GossipSub, joined: Set<string>, events: string[] } {
  const joined = new Set<string>()
  const events: string[] = []
  const fake = {
    topicValidators: new Map(),
    addEventListener: () => {},
    removeEventListener: () => {},
    subscribe: (topic: string) => { joined.add(topic); events.push(`+${topic}`) },
    unsubscribe: (topic: string) => { joined.delete(topic); events.push(`-${topic}`) },
    publish: async () => ({ recipients: [] }),
  }
  return { pubsub: fake as unknown as GossipSub, joined, events }
}

describe('HaveGossip topic membership', () => {
  const tree = 'rhel-10/compose/BaseOS'
  const topic = haveTopic(tree)

  it('validates a watched tree but joins its topic only while listening (a site that holds the version stays out)', () => {
    const { pubsub, joined } = fakePubsub()
    const gossip = new HaveGossip({ pubsub, log: createLogger({ level: 'silent', pretty: false }), onHave: () => {} })
    gossip.subscribe(tree)
    gossip.start()
    expect(pubsub.topicValidators.has(topic)).toBe(true)
    expect(joined.has(topic)).toBe(false)
    gossip.listen(tree, true)
    expect(joined.has(topic)).toBe(true)
    expect(gossip.isListening(tree)).toBe(true)
    gossip.listen(tree, false)
    expect(joined.has(topic)).toBe(false)
    expect(pubsub.topicValidators.has(topic)).toBe(true)
  })

  it('joins once however often a sync restarts, defers until start, and leaves on stop', () => {
    const { pubsub, joined, events } = fakePubsub()
    const gossip = new HaveGossip({ pubsub, log: createLogger({ level: 'silent', pretty: false }), onHave: () => {} })
    gossip.listen(tree, true)
    expect(events).toEqual([])
    gossip.start()
    gossip.listen(tree, true)
    expect(events).toEqual([`+${topic}`])
    gossip.stop()
    expect(joined.size).toBe(0)
    expect(pubsub.topicValidators.size).toBe(0)
  })
})
