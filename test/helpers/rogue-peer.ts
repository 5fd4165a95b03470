// A hostile peer for tests and the chaos script (test support, not part of the agent): a real libp2p node that speaks
// the deltamesh protocols (heads, chunks, gossip) with the real protocol classes, but whose answers are
// chosen by the caller — wrong bytes under a right chunk id, forged or replayed envelopes, heads that claim
// a version it does not hold, small-file deltas that rebuild the wrong bytes. It lets a test put a liar among
// honest agents without a hidden mode in them.
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import type { PeerId } from '@libp2p/interface'
import { toHex, type ChunkId } from '../../protocol/chunk-id.js'
import type { Envelope } from '../../protocol/envelope.js'
import { treeTopic } from '../../protocol/ids.js'
import type { HeadEntry } from '../../protocol/messages.js'
import { createNode, PeerAllowlist, type DeltameshNode } from '../../agent/net/node.js'
import { ChunkServer } from '../../agent/net/chunk-server.js'
import { ChunkClient } from '../../agent/net/chunk-client.js'
import { HeadsProtocol } from '../../agent/net/heads-protocol.js'
import { Announcer } from '../../agent/net/announcer.js'
import { DeltaService } from '../../agent/net/delta-protocol.js'
import { decodeUntrusted, expectTuple } from '../../protocol/codec.js'
import { encodeDelta } from '../../protocol/delta.js'

/** What the rogue answers to a WANT: bytes (of its choosing) or undefined (DONT_HAVE). */
export type RogueProvider = (id: ChunkId, signal: AbortSignal) => Promise<Uint8Array | undefined>
/** What the rogue answers to a DELTA_WANT for one key: an encoded delta (of its choosing) or undefined (DONT_HAVE). */
export type RogueDeltaProvider = (key: Uint8Array, signal: AbortSignal) => Promise<Uint8Array | undefined>

export class RoguePeer {
  /** Newest envelope heard per tree (gossip or heads), so the rogue can claim to hold it. */
  readonly envelopes = new Map<string, Envelope>()
  /** Every distinct envelope heard, oldest first (material for replays). */
  readonly heard: Envelope[] = []
  /** Heads it shows; `advertise()` fills it from what it heard. */
  heads: HeadEntry[] = []
  /** Answers to WANTs; the default lies (see lyingProvider). */
  provider: RogueProvider
  /** Answers to DELTA_WANTs; by default it holds none. */
  deltaProvider: RogueDeltaProvider = async () => undefined
  chunksServed = 0
  deltasServed = 0
  private readonly chunkClient: ChunkClient

  private constructor (
    readonly node: DeltameshNode,
    readonly allowlist: PeerAllowlist,
    private readonly server: ChunkServer,
    private readonly headsProtocol: HeadsProtocol,
    readonly announcer: Announcer,
    private readonly deltas: DeltaService,
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
    const deltas = new DeltaService({ libp2p: node, allowlist, provider: { getMany: async (keys, signal) => await Promise.all(keys.map(async key => { if (self === undefined) return undefined; self.deltasServed++; return await self.deltaProvider(key, signal) })) } })
    self = new RoguePeer(node, allowlist, server, headsProtocol, announcer, deltas)
    await server.start()
    await headsProtocol.start()
    await announcer.start()
    await deltas.start()
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

  /** An honest relay: the real chunk, fetched from a connected peer that has it (DONT_HAVE when none has). */
  relayProvider (): RogueProvider {
    return async (id, signal) => {
      for (const peer of this.node.getPeers()) {
        let bytes: Uint8Array | undefined
        await this.chunkClient.fetch(peer, [{ id, size: 256 * 1024 }], { signal, onBlock: (_id, b) => { bytes = b } })
        if (bytes !== undefined) return bytes
      }
      return undefined
    }
  }

  /**
   * Relays deltas from connected peers, but answers the keys at positions `lieAt` (counted over every key
   * it was asked, in order, from 0) with a well-formed delta of the right target size whose bytes are
   * garbage: it decodes and applies, and only the target's chunk hashes give it away.
   */
  lyingDeltaProvider (lieAt: number[] = [0]): RogueDeltaProvider {
    let asked = 0
    return async (key, signal) => {
      const position = asked++
      for (const peer of this.node.getPeers()) {
        let real: Uint8Array | undefined
        try {
          real = (await this.deltas.fetch(peer, [key], signal)).get(toHex(key))
        } catch { continue } // a peer without the protocol (the test's other agents all have it)
        if (real === undefined) continue
        if (!lieAt.includes(position)) return real
        const targetSize = expectTuple(decodeUntrusted(real, 'delta'), 'delta', 'DLT', 1, 5)[2] as number
        return encodeDelta(new Uint8Array(0), Buffer.alloc(targetSize, 0x5a))
      }
      return undefined
    }
  }

  async stop (): Promise<void> {
    await this.deltas.stop()
    await this.chunkClient.stop()
    await this.announcer.stop()
    await this.headsProtocol.stop()
    await this.server.stop()
    await this.node.stop()
  }
}
