import type { PeerId } from '@libp2p/interface'
import { TopicValidatorResult, type GossipSub, type GossipsubMessage, type Message as GossipMessage } from '@libp2p/gossipsub'
import { decodeHave, encodeHave, haveTopic, MAX_HAVE_IDS, type HaveMessage } from '../../protocol/have.js'
import type { ChunkId } from '../../protocol/chunk-id.js'
import type { Logger } from '../log.js'

export interface HaveGossipComponents {
  pubsub: GossipSub
  log: Logger
  /** A HAVE from `origin` (the site that signed it, not the relay). */
  onHave: (origin: string, have: HaveMessage) => void
  onMisbehaviour?: (peerId: string, reason: string) => void
}

/**
 * Gossips HAVE messages on one topic per tree (see protocol/have.ts). A tree is watched (its validator is
 * set) from the start, but its topic is joined only while this site syncs the tree: HAVEs only steer a
 * running sync, and a site that holds the version (the origin above all) would otherwise verify the
 * signature of, and relay, every HAVE every subscriber sends — a third of a serving origin's CPU with 4
 * subscribers. Relaying is not needed for delivery: a HAVE is only useful to a direct peer of its sender
 * (chunks are fetched over a direct connection), and gossipsub flood-publishes a site's own messages to
 * every direct peer on the topic.
 */
export class HaveGossip {
  private readonly trees = new Set<string>()
  /** Trees whose topic we are (or, once started, will be) subscribed to. */
  private readonly listening = new Set<string>()
  private running = false

  constructor (private readonly components: HaveGossipComponents) {
    this.onMessage = this.onMessage.bind(this)
  }

  start (): void {
    if (this.running) return
    this.running = true
    this.components.pubsub.addEventListener('gossipsub:message', this.onMessage)
    for (const tree of this.trees) this.watch(tree)
    for (const tree of this.listening) this.components.pubsub.subscribe(haveTopic(tree))
  }

  stop (): void {
    if (!this.running) return
    this.running = false
    this.components.pubsub.removeEventListener('gossipsub:message', this.onMessage)
    for (const tree of this.listening) this.components.pubsub.unsubscribe(haveTopic(tree))
    for (const tree of this.trees) this.components.pubsub.topicValidators.delete(haveTopic(tree))
  }

  /** Validates HAVEs of `tree` from now on (the topic itself is joined by listen()). */
  subscribe (tree: string): void {
    if (this.trees.has(tree)) return
    this.trees.add(tree)
    if (this.running) this.watch(tree)
  }

  /** Joins (a sync of `tree` starts) or leaves (this site holds the version) the tree's HAVE topic. */
  listen (tree: string, on: boolean): void {
    this.subscribe(tree)
    if (on === this.listening.has(tree)) return
    if (on) this.listening.add(tree)
    else this.listening.delete(tree)
    if (!this.running) return
    if (on) this.components.pubsub.subscribe(haveTopic(tree))
    else this.components.pubsub.unsubscribe(haveTopic(tree))
  }

  /** Whether this site is on the tree's HAVE topic (status, tests). */
  isListening (tree: string): boolean {
    return this.listening.has(tree)
  }

  /** Sends the ids in messages of at most MAX_HAVE_IDS; an empty list sends the "I am syncing" beacon. */
  async announce (tree: string, seq: number, ids: ChunkId[]): Promise<void> {
    if (!this.running) return
    const topic = haveTopic(tree)
    for (let i = 0; i === 0 || i < ids.length; i += MAX_HAVE_IDS) {
      await this.components.pubsub.publish(topic, encodeHave({ tree, seq, ids: ids.slice(i, i + MAX_HAVE_IDS) }))
    }
  }

  private watch (tree: string): void {
    this.components.pubsub.topicValidators.set(haveTopic(tree), (from, msg) => this.validate(tree, from, msg))
  }

  private validate (tree: string, from: PeerId, msg: GossipMessage): TopicValidatorResult {
    try {
      if (msg.type !== 'signed') throw new Error('unsigned HAVE')
      if (decodeHave(msg.data).tree !== tree) throw new Error('HAVE for another tree on this topic')
      return TopicValidatorResult.Accept
    } catch (err) {
      this.components.onMisbehaviour?.(from.toString(), `bad HAVE on ${tree}: ${(err as Error).message}`)
      return TopicValidatorResult.Reject
    }
  }

  private onMessage (evt: CustomEvent<GossipsubMessage>): void {
    const { msg } = evt.detail
    if (msg.type !== 'signed' || !msg.topic.startsWith('deltamesh/have/1/')) return
    try {
      const have = decodeHave(msg.data)
      if (!this.trees.has(have.tree)) return
      this.components.onHave(msg.from.toString(), have)
    } catch (err) {
      this.components.log.debug({ err }, 'ignoring undecodable HAVE')
    }
  }
}
