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

/** Gossips HAVE messages on one topic per tree (see protocol/have.ts). */
export class HaveGossip {
  private readonly trees = new Set<string>()
  private running = false

  constructor (private readonly components: HaveGossipComponents) {
    this.onMessage = this.onMessage.bind(this)
  }

  start (): void {
    if (this.running) return
    this.running = true
    this.components.pubsub.addEventListener('gossipsub:message', this.onMessage)
    for (const tree of this.trees) this.listen(tree)
  }

  stop (): void {
    if (!this.running) return
    this.running = false
    this.components.pubsub.removeEventListener('gossipsub:message', this.onMessage)
    for (const tree of this.trees) this.unlisten(tree)
  }

  subscribe (tree: string): void {
    if (this.trees.has(tree)) return
    this.trees.add(tree)
    if (this.running) this.listen(tree)
  }

  /** Sends the ids in messages of at most MAX_HAVE_IDS; an empty list sends the "I am syncing" beacon. */
  async announce (tree: string, seq: number, ids: ChunkId[]): Promise<void> {
    if (!this.running) return
    const topic = haveTopic(tree)
    for (let i = 0; i === 0 || i < ids.length; i += MAX_HAVE_IDS) {
      await this.components.pubsub.publish(topic, encodeHave({ tree, seq, ids: ids.slice(i, i + MAX_HAVE_IDS) }))
    }
  }

  private listen (tree: string): void {
    const topic = haveTopic(tree)
    this.components.pubsub.topicValidators.set(topic, (from, msg) => this.validate(tree, from, msg))
    this.components.pubsub.subscribe(topic)
  }

  private unlisten (tree: string): void {
    const topic = haveTopic(tree)
    this.components.pubsub.unsubscribe(topic)
    this.components.pubsub.topicValidators.delete(topic)
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
