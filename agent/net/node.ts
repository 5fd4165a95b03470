// The libp2p node: TCP + Noise + yamux, identify, ping, gossipsub, and a connection gater that admits only
// the peer ids the operator listed. The node knows nothing about trees or chunks; protocols attach to it.
import { createLibp2p, type Libp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { yamux } from '@chainsafe/libp2p-yamux'
import { halfWindowUpdates } from './yamux-window.js'
import { identify, type Identify } from '@libp2p/identify'
import { ping, type Ping } from '@libp2p/ping'
import { gossipsub, type GossipSub, type GossipsubOpts } from '@libp2p/gossipsub'
import { peerIdFromString } from '@libp2p/peer-id'
import type { ConnectionGater, PeerId, PrivateKey } from '@libp2p/interface'
import type { PeerBans } from './bans.js'
import { cheapFrameNoise } from './noise-frames.js'
import { coalescedWrites } from './socket-writes.js'

/**
 * yamux per-stream receive window. STACK-NOTES §3: 4 MiB instead of the 256 KiB default takes one
 * 64 KiB-frame stream from ~140 to ~200 MB/s on loopback (the sender no longer stalls on window updates).
 */
export const DEFAULT_STREAM_WINDOW_BYTES = 4 * 1024 * 1024

export type DeltameshServices = { identify: Identify, ping: Ping, pubsub: GossipSub }
export type DeltameshNode = Libp2p<DeltameshServices>

type PeerLike = PeerId | string

/**
 * The peer ids allowed to connect to us and be dialled by us. The agent mutates it at runtime
 * (operator adds or removes a site); listeners learn of removals so live connections can be closed.
 */
export class PeerAllowlist {
  private readonly ids = new Set<string>()
  private readonly listeners = new Set<(peer: string, allowed: boolean) => void>()

  constructor (peers: Iterable<PeerLike> = []) {
    for (const p of peers) this.ids.add(PeerAllowlist.key(p))
  }

  /** Normalises a peer id or its string; throws for a string that is not a peer id. */
  static key (peer: PeerLike): string {
    return typeof peer === 'string' ? peerIdFromString(peer).toString() : peer.toString()
  }

  has (peer: PeerLike): boolean {
    return this.ids.has(typeof peer === 'string' ? peer : peer.toString())
  }

  add (peer: PeerLike): void {
    const k = PeerAllowlist.key(peer)
    if (this.ids.has(k)) return
    this.ids.add(k)
    for (const l of this.listeners) l(k, true)
  }

  remove (peer: PeerLike): void {
    const k = PeerAllowlist.key(peer)
    if (!this.ids.delete(k)) return
    for (const l of this.listeners) l(k, false)
  }

  list (): string[] {
    return [...this.ids]
  }

  get size (): number { return this.ids.size }

  /** Returns an unsubscribe function. */
  onChange (listener: (peer: string, allowed: boolean) => void): () => void {
    this.listeners.add(listener)
    return () => this.listeners.delete(listener)
  }
}

/**
 * Denies every dial to, and every encrypted connection from or to, a peer not on the allowlist, and a listed
 * peer while it is banned (a banned liar must not come straight back by redialling us).
 */
export function allowlistGater (allowlist: PeerAllowlist, bans?: Pick<PeerBans, 'isBanned'>): ConnectionGater {
  const deny = (peerId: PeerId): boolean => !allowlist.has(peerId) || bans?.isBanned(peerId) === true
  return {
    denyDialPeer: deny,
    denyInboundEncryptedConnection: deny,
    denyOutboundEncryptedConnection: deny,
    denyInboundUpgradedConnection: deny,
    denyOutboundUpgradedConnection: deny,
    // we never relay, and never accept relayed connections
    denyInboundRelayReservation: () => true,
    denyOutboundRelayedConnection: () => true,
    denyInboundRelayedConnection: () => true,
  }
}

export interface NodeOptions {
  privateKey: PrivateKey
  /** e.g. ['/ip4/0.0.0.0/tcp/4711']; tests use '/ip4/127.0.0.1/tcp/0'. Empty: dial-out only. */
  listen: string[]
  allowlist: PeerAllowlist
  /** Peers refused while banned, even when listed. */
  bans?: Pick<PeerBans, 'isBanned'>
  /** Addresses to announce instead of the listen addresses (NAT, public name). */
  announce?: string[]
  streamWindowBytes?: number
  /** Extra gossipsub settings (tests lower heartbeat intervals). */
  gossip?: Partial<GossipsubOpts>
  /** Default true. */
  start?: boolean
}

/**
 * libp2p refuses a host's 6th inbound connection within a second and an 11th still in its handshake: 16 sites
 * on one host (or behind one NAT) starting together lost most of their connections to that and then waited
 * out their redial backoff (measured: after 14 minutes a site had 2 of 16 peers). The limits still bound what
 * an unlisted host can make us spend on handshakes, but leave room for every listed site to dial at once,
 * twice (both ends dial), with margin for sites added at run time.
 */
export function inboundLimits (listedPeers: number): { inboundConnectionThreshold: number, maxIncomingPendingConnections: number } {
  const room = Math.max(32, 2 * listedPeers + 8)
  return { inboundConnectionThreshold: room, maxIncomingPendingConnections: room }
}

export async function createNode (options: NodeOptions): Promise<DeltameshNode> {
  const window = options.streamWindowBytes ?? DEFAULT_STREAM_WINDOW_BYTES
  // window updates at half the window, as Go's yamux does (yamux-window.ts)
  halfWindowUpdates()
  const node = await createLibp2p({
    privateKey: options.privateKey,
    start: options.start ?? true,
    addresses: { listen: options.listen, announce: options.announce ?? [] },
    transports: [tcp()],
    // coalescedWrites: one writev per send on the TCP socket underneath (socket-writes.ts)
    connectionEncrypters: [coalescedWrites(cheapFrameNoise())],
    streamMuxers: [yamux({ streamOptions: { initialStreamWindowSize: window, maxStreamWindowSize: Math.max(window, 16 * 1024 * 1024) } })],
    connectionGater: allowlistGater(options.allowlist, options.bans),
    connectionManager: inboundLimits(options.allowlist.size),
    services: {
      identify: identify(),
      ping: ping(),
      pubsub: gossipsub({
        // an announcement with no subscriber yet is not an error: late joiners learn it from the heads exchange
        allowPublishToZeroTopicPeers: true,
        // gossipsub's default penalises more than 10 peers on one IP address (a Sybil defence): on 17 agents
        // on one host every peer fell below the graylist threshold, HAVEs were dropped, no site knew the
        // others were syncing, and the origin uploaded 16 copies. Only allowlisted peers get a connection
        // here, so the defence buys nothing, and many sites behind one NAT or on one host are legitimate.
        scoreParams: { IPColocationFactorWeight: 0 },
        ...options.gossip,
      }),
    },
  })
  // A peer taken off the list loses its live connections too, not just future ones.
  const unsubscribe = options.allowlist.onChange((peer, allowed) => {
    if (allowed) return
    node.hangUp(peerIdFromString(peer)).catch(err => node.logger.forComponent('deltamesh:node').error('hang up %s failed - %e', peer, err))
  })
  node.addEventListener('stop', unsubscribe, { once: true })
  return node
}

export { loadOrCreatePeerKey } from './peer-key.js'
