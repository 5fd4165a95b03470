// A hostile peer for tests and the chaos script, never wired into the agent: a real libp2p node that speaks
// the deltamesh protocols (heads, chunks, gossip) with the real protocol classes, but whose answers are
// chosen by the caller — wrong bytes under a right chunk id, forged or replayed envelopes, heads that claim
// a version it does not hold. It lets a test put a liar among honest agents without a hidden mode in them.
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import type { PeerId } from '@libp2p/interface'
import { toHex, type ChunkId } from '../../protocol/chunk-id.js'
import type { Envelope } from '../../protocol/envelope.js'
import { treeTopic } from '../../protocol/ids.js'
import type { HeadEntry } from '../../protocol/messages.js'
import { createNode, PeerAllowlist, type DeltameshNode } from '../net/node.js'
import { ChunkServer } from '../net/chunk-server.js'
import { ChunkClient } from '../net/chunk-client.js'
import { HeadsProtocol } from '../net/heads-protocol.js'
import { Announcer } from '../net/announcer.js'

/** What the rogue answers to a WANT: bytes (of its choosing) or undefined (DONT_HAVE). */
export type RogueProvider = (id: ChunkId, signal: AbortSignal) => Promise<Uint8Array | undefined>

export class RoguePeer {
  /** Newest envelope heard per tree (gossip or heads), so the rogue can claim to hold it. */
  readonly envelopes = new Map<string, Envelope>()
  /** Every distinct envelope heard, oldest first (material for replays). */
  readonly heard: Envelope[] = []
  /** Heads it shows; `advertise()` fills it from what it heard. */
  heads: HeadEntry[] = []
  /** Answers to WANTs; the default lies (see lyingProvider). */
  provider: RogueProvider
  chunksServed = 0
  private readonly chunkClient: ChunkClient

  private constructor (
    readonly node: DeltameshNode,
    readonly allowlist: PeerAllowlist,
    private readonly server: ChunkServer,
    private readonly headsProtocol: HeadsProtocol,
    readonly announcer: Announcer,
  ) {
    this.chunkClient = new ChunkClient({ libp2p: node }, { stallTimeoutMs: 5_000 })
    this.provider = this.lyingProvider()
  }

  static async start (trees: string[]): Promise<RoguePeer> {
    const allowlist = new PeerAllowlist()
    const node = await createNode({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'], allowlist, gossip: { heartbeatInterval: 200 } })
    let self: RoguePeer | undefined
    const remember = (e: Envelope): void => {
      if (self !== undefined && !self.heard.some(h => Buffer.compare(h.bytes, e.bytes) === 0)) self.heard.push(e)
      const known = self?.envelopes.get(e.tree)
      if (known === undefined || e.seq > known.seq) self?.envelopes.set(e.tree, e)
    }
    const server = new ChunkServer({ libp2p: node, allowlist, provider: { read: async (id, signal) => { if (self === undefined) return undefined; self.chunksServed++; return await self.provider(id, signal) } } })
    const headsProtocol = new HeadsProtocol({
      libp2p: node, allowlist, provider: { heads: async () => self?.heads ?? [] }, onHeads: (_peer, heads) => { for (const h of heads) remember(h.envelope) },
    })
    const announcer = new Announcer({ libp2p: node, pubsub: node.services.pubsub, onEnvelope: remember })
    for (const t of trees) announcer.subscribe(t)
    self = new RoguePeer(node, allowlist, server, headsProtocol, announcer)
    await server.start()
    await headsProtocol.start()
    await announcer.start()
    await self.chunkClient.start()
    return self
  }

  get peerId (): string { return this.node.peerId.toString() }
  get multiaddr (): string { return (this.node.getMultiaddrs()[0] as ReturnType<DeltameshNode['getMultiaddrs']>[number]).toString() }

  allow (peerId: string): void { this.allowlist.add(peerId) }

  async dial (addr: string): Promise<void> {
    await this.node.dial(multiaddr(addr), { signal: AbortSignal.timeout(5_000) })
  }

  /** Whether a dial to `addr` completes and stays up for `holdMs` (a gater may drop it right after Noise). */
  async canConnect (addr: string, holdMs = 500): Promise<boolean> {
    const ma = multiaddr(addr)
    const peer = ma.getComponents().findLast(c => c.name === 'p2p')?.value
    try {
      await this.node.dial(ma, { signal: AbortSignal.timeout(5_000) })
    } catch {
      return false
    }
    await new Promise(resolve => setTimeout(resolve, holdMs))
    return peer !== undefined && this.node.getConnections(peerIdFromString(peer)).length > 0
  }

  connectedTo (peerId: string): boolean {
    return this.node.getConnections(peerIdFromString(peerId)).length > 0
  }

  /** Claims to hold completely every version it heard of, and pushes those heads to every connected peer. */
  async advertise (): Promise<void> {
    this.heads = [...this.envelopes.values()].map(e => ({ tree: e.tree, seq: e.seq, complete: true, envelope: e.bytes }))
    await this.headsProtocol.broadcastHeads()
  }

  /** Pushes exactly these heads (crafted envelopes) to every connected peer. */
  async pushHeads (heads: HeadEntry[]): Promise<void> {
    this.heads = heads
    await this.headsProtocol.broadcastHeads()
  }

  /** Publishes raw bytes on a tree's announcement topic (no validation on our side: that is the point). */
  async gossip (tree: string, bytes: Uint8Array): Promise<void> {
    await this.node.services.pubsub.publish(treeTopic(tree), bytes)
  }

  /** Whether `peerId` has joined the tree's topic as we see it (a gossip sent earlier would reach nobody). */
  hearsTopic (tree: string, peerId: string): boolean {
    return this.node.services.pubsub.getSubscribers(treeTopic(tree)).some((p: PeerId) => p.toString() === peerId)
  }

  /** Asks `peerId` for chunks like any client would (every BLOCK is hash-checked): how many came, how many bytes. */
  async fetchFrom (peerId: string, wants: Array<{ id: ChunkId, size: number }>, signal?: AbortSignal): Promise<{ delivered: number, bytes: number, failed: number }> {
    const r = await this.chunkClient.fetch(peerIdFromString(peerId), wants, { signal, onBlock: () => {} })
    return { delivered: r.delivered, bytes: r.bytes, failed: r.failed.length }
  }

  /**
   * The subtle liar: fetches the real chunk from a connected peer that has it and flips one byte, so size
   * and timing look right and only the hash gives it away. Falls back to garbage when nobody has it.
   */
  lyingProvider (): RogueProvider {
    return async (id, signal) => {
      let bytes: Uint8Array | undefined
      for (const peer of this.node.getPeers()) {
        await this.chunkClient.fetch(peer, [{ id, size: 256 * 1024 }], { signal, onBlock: (_id, b) => { bytes = b } })
        if (bytes !== undefined) break
      }
      const out = Buffer.from(bytes ?? Buffer.alloc(4096, toHex(id)))
      out[out.length >> 1] = (out[out.length >> 1] as number) ^ 0x01
      return out
    }
  }

  async stop (): Promise<void> {
    await this.chunkClient.stop()
    await this.announcer.stop()
    await this.headsProtocol.stop()
    await this.server.stop()
    await this.node.stop()
  }
}
