// Gossip announcements: one topic per tree carrying signed envelopes, plus a status topic for the
// network-wide dashboard. Envelopes are opened (signature verified) in the topic validator, so a bad one is
// rejected before gossipsub forwards it, and its sender is struck.
import type { Libp2p, PeerId } from '@libp2p/interface'
import { TopicValidatorResult, type GossipSub, type Message as GossipMessage, type GossipsubMessage } from '@libp2p/gossipsub'
import { STATUS_TOPIC, treeOfTopic, treeTopic } from '../../protocol/ids.js'
import { InvalidMessageError, LimitExceededError } from '../../protocol/errors.js'
import { openEnvelope, type Envelope } from '../../protocol/envelope.js'
import { MAX_STATUS_BYTES } from '../../protocol/wire-limits.js'
import type { MisbehaviourHandler } from './peer-stats.js'
import { rejectReasonOf, type RejectReason } from './admission.js'

export interface AnnouncerComponents {
  libp2p: Pick<Libp2p, 'logger'>
  pubsub: GossipSub
  /** A verified envelope heard on a subscribed tree's topic; `from` is the peer that relayed it to us. */
  onEnvelope: (envelope: Envelope, from: PeerId) => void
  /** A status blob (opaque here, at most MAX_STATUS_BYTES) from `origin` (the signer), relayed by `from`. */
  onStatus?: (bytes: Uint8Array, origin: PeerId | undefined, from: PeerId) => void
  onMisbehaviour?: MisbehaviourHandler
  /** An envelope refused before admission (bad signature, undecodable, another tree's): counted in status. */
  onRejected?: (from: PeerId, reason: RejectReason, message: string) => void
}

export class Announcer {
  private readonly log
  private readonly trees = new Set<string>()
  /** Envelopes opened by the validator, handed to the message event (same message object). */
  private readonly opened = new WeakMap<GossipMessage, Envelope>()
  private running = false

  constructor (private readonly components: AnnouncerComponents) {
    this.log = components.libp2p.logger.forComponent('deltamesh:announcer')
    this.onMessage = this.onMessage.bind(this)
  }

  async start (): Promise<void> {
    if (this.running) return
    this.running = true
    this.components.pubsub.addEventListener('gossipsub:message', this.onMessage)
    if (this.components.onStatus !== undefined) {
      this.components.pubsub.topicValidators.set(STATUS_TOPIC, (from, msg) => this.validateStatus(from, msg))
      this.components.pubsub.subscribe(STATUS_TOPIC)
    }
    for (const tree of this.trees) this.listen(tree)
  }

  async stop (): Promise<void> {
    if (!this.running) return
    this.running = false
    this.components.pubsub.removeEventListener('gossipsub:message', this.onMessage)
    for (const tree of this.trees) this.unlisten(tree)
    if (this.components.onStatus !== undefined) {
      this.components.pubsub.unsubscribe(STATUS_TOPIC)
      this.components.pubsub.topicValidators.delete(STATUS_TOPIC)
    }
  }

  subscribe (tree: string): void {
    const topic = treeTopic(tree)
    if (this.trees.has(tree)) return
    this.trees.add(tree)
    if (this.running) this.listen(tree)
    this.log('subscribed to %s', topic)
  }

  unsubscribe (tree: string): void {
    if (!this.trees.delete(tree)) return
    if (this.running) this.unlisten(tree)
  }

  subscriptions (): string[] {
    return [...this.trees]
  }

  /** Publishes a signed envelope on its tree's topic. Returns how many peers it was sent to (0 is fine). */
  async announce (envelopeBytes: Uint8Array): Promise<number> {
    const envelope = openEnvelope(envelopeBytes)
    const topic = treeTopic(envelope.tree)
    const recipients = await this.publish(topic, envelopeBytes)
    if (recipients === 0) this.log('announced %s@%d to nobody yet (heads exchange covers late joiners)', envelope.tree, envelope.seq)
    return recipients
  }

  async publishStatus (bytes: Uint8Array): Promise<number> {
    if (bytes.byteLength > MAX_STATUS_BYTES) throw new LimitExceededError('status size', bytes.byteLength, MAX_STATUS_BYTES)
    return await this.publish(STATUS_TOPIC, bytes)
  }

  /** Publishes; "nobody subscribed" is 0 recipients, not an error (a pubsub built without allowPublishToZeroTopicPeers throws it). */
  private async publish (topic: string, bytes: Uint8Array): Promise<number> {
    try {
      const { recipients } = await this.components.pubsub.publish(topic, bytes)
      return recipients.length
    } catch (err) {
      if ((err as Error).message === 'PublishError.NoPeersSubscribedToTopic') return 0
      throw err
    }
  }

  private listen (tree: string): void {
    const topic = treeTopic(tree)
    this.components.pubsub.topicValidators.set(topic, (from, msg) => this.validateEnvelope(tree, from, msg))
    this.components.pubsub.subscribe(topic)
  }

  private unlisten (tree: string): void {
    const topic = treeTopic(tree)
    this.components.pubsub.unsubscribe(topic)
    this.components.pubsub.topicValidators.delete(topic)
  }

  private validateEnvelope (tree: string, from: PeerId, msg: GossipMessage): TopicValidatorResult {
    let reason: RejectReason
    let err: Error
    try {
      const envelope = openEnvelope(msg.data)
      if (envelope.tree === tree) {
        this.opened.set(msg, envelope)
        return TopicValidatorResult.Accept
      }
      reason = 'wrong-tree'
      err = new InvalidMessageError(`envelope for ${envelope.tree} on the topic of ${tree}`)
    } catch (e) {
      reason = rejectReasonOf(e)
      err = e as Error
    }
    this.log('rejecting gossip from %p on %s - %e', from, tree, err)
    this.components.onRejected?.(from, reason, `${reason} announcement on ${tree}: ${err.message}`)
    this.components.onMisbehaviour?.(from.toString(), `bad announcement on ${tree}: ${err.message}`)
    return TopicValidatorResult.Reject
  }

  private validateStatus (from: PeerId, msg: GossipMessage): TopicValidatorResult {
    if (msg.data.byteLength <= MAX_STATUS_BYTES) return TopicValidatorResult.Accept
    this.components.onMisbehaviour?.(from.toString(), `status of ${msg.data.byteLength} bytes`)
    return TopicValidatorResult.Reject
  }

  private onMessage (evt: CustomEvent<GossipsubMessage>): void {
    const { msg, propagationSource } = evt.detail
    try {
      if (msg.topic === STATUS_TOPIC) {
        this.components.onStatus?.(msg.data, msg.type === 'signed' ? msg.from : undefined, propagationSource)
        return
      }
      const tree = treeOfTopic(msg.topic)
      if (tree === undefined || !this.trees.has(tree)) return
      const envelope = this.opened.get(msg) ?? openEnvelope(msg.data)
      this.components.onEnvelope(envelope, propagationSource)
    } catch (err) {
      this.log.error('gossip listener failed - %e', err)
    }
  }
}
