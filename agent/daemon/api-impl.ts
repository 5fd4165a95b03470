// The AgentApi of a running agent (what the control socket, the dashboard and the metrics call): status put
// together from the parts, and the operations an operator starts at runtime (publish, subscribe, peers, trust,
// limits). agent.ts creates the parts and starts them; this file only reads and drives them.
import type { KeyObject } from 'node:crypto'
import { peerIdFromString } from '@libp2p/peer-id'
import { parsePublisherKey } from '../../protocol/envelope.js'
import { validateTreeName } from '../../protocol/paths.js'
import { chunkingFor } from '../../protocol/chunking.js'
import type { HomeLayout } from '../core/home.js'
import type { Logger } from '../core/log.js'
import { appendPeer, appendTrust, removePeerEntry, type AgentConfig } from '../core/config.js'
import type { Store } from '../store/index.js'
import type { ChunkerPool } from '../chunk/pool.js'
import type { DeltameshNode, PeerAllowlist } from '../net/node.js'
import type { PeerStats } from '../net/peer-stats.js'
import type { PeerBans } from '../net/bans.js'
import { RejectionCounters, type RejectReason } from '../net/admission.js'
import type { Announcer } from '../net/announcer.js'
import type { HeadsProtocol } from '../net/heads-protocol.js'
import type { Dialer } from '../net/dialer.js'
import { peerIdOfAddr } from '../net/peer-address.js'
import { LimitRequestError, type BandwidthManager } from '../bandwidth/manager.js'
import { publishVersion } from '../publish/publish.js'
import { verifyTree } from './verify-repair.js'
import type { RepairFetch } from '../versions/repair.js'
import { applyRetention } from '../versions/retention.js'
import type { TreeManager } from './trees.js'
import type { AgentApi, AgentStatus, DiffOptions, DiffRequest, DiffSummary, EventsOptions, PeerStatus, PublishRequest, PublishSummary, RemovedPeer, TreeStatus, WatchStatus } from '../api/api.js'
import { diffSeqsOf, diffVersions, emptyCounts } from '../versions/version-diff.js'
import type { EventHub } from './events.js'
import { checkPeerAddress, checkRemovable, resolvePeerRef } from '../net/peer-address.js'
import { KeyedMutex } from '../store/mutex.js'

export const AGENT_VERSION = '0.1.0'

/**
 * The peers this site knows by name and the publisher keys it trusts per tree: from config.toml, then from
 * `peers add` and `trust` at runtime (which also append them to config.toml).
 */
export class PeersAndTrust {
  readonly trust = new Map<string, Set<string>>()
  readonly peerNames = new Map<string, { name?: string, addr: string }>()

  constructor (config: AgentConfig) {
    for (const t of config.trust) this.addTrust(t.tree, t.key)
    for (const p of config.peers) this.peerNames.set(peerIdOfAddr(p.addr), { name: p.name, addr: p.addr })
  }

  addTrust (tree: string, key: string): void {
    const set = this.trust.get(tree) ?? new Set<string>()
    set.add(key)
    this.trust.set(tree, set)
  }
}

/** What status counts of what this agent refused: versions (per reason) and chunks. */
export class RefusalCounts {
  readonly counters = { envelopesRejected: 0, chunksRejected: 0 }
  readonly rejections = new RejectionCounters()

  constructor (private readonly log: Logger) {}

  /** A version refused; `peer` when a protocol refused it before admission (trees.ts logs its own refusals). */
  readonly versionRejected = (code: RejectReason, reason: string, peer?: string): void => {
    this.rejections.count(code)
    this.counters.envelopesRejected = this.rejections.total
    if (peer !== undefined) this.log.warn({ peer, reason: code }, `rejected version: ${reason}`)
  }

  /** Bytes from a peer that did not hash to their id, or an indexed chunk found changed on disk. */
  chunkRejected (): void { this.counters.chunksRejected++ }
}

/** The parts of a running agent the API reads and drives. */
export interface AgentApiComponents {
  home: HomeLayout
  log: Logger
  config: AgentConfig
  selfId: string
  selfPublisherKey: string
  publisherKey: KeyObject
  startedAtMs: number
  store: Store
  pool: ChunkerPool
  node: Pick<DeltameshNode, 'getMultiaddrs' | 'getPeers'>
  stats: PeerStats
  bans: PeerBans
  allowlist: PeerAllowlist
  bandwidth: BandwidthManager
  announcer: Announcer
  heads: HeadsProtocol
  dialer: Dialer
  trees: TreeManager
  book: PeersAndTrust
  refusals: RefusalCounts
  events: EventHub
  /** Listens to a tree's gossip topics. */
  watchTree: (tree: string) => void
  /** Chunks for verify --repair from the connected peers, paced as the tree's syncs are. */
  repairFetch: (tree: string) => RepairFetch
  /** The dashboard's address, once operations run and when it is on. */
  dashboardUrl: () => string | undefined
  /** The metalink listener's address, when [mirrors] listen is set. */
  mirrorsUrl?: () => string | undefined
  /** [[publish]] sources watched. */
  watches?: () => WatchStatus[]
}

export function createAgentApi (c: AgentApiComponents): AgentApi {
  const { log, bandwidth, trees } = c
  // one publish of a tree at a time, whoever asks (a [[publish]] watch, `deltamesh publish`): the next waits
  const publishing = new KeyedMutex()
  return {
    status: async () => await agentStatus(c),
    publish: async (request, signal) => await publishing.run(request.tree, async () => { signal?.throwIfAborted(); return await publishAndAnnounce(c, request, signal) }),
    subscribe: async request => { await trees.subscribe(request) },
    unsubscribe: async tree => { await trees.unsubscribe(tree) },
    addPeer: async (addr, name) => { await addPeer(c, addr, name) },
    removePeer: async peer => await removePeer(c, peer),
    trust: async (tree, key) => { await trustKey(c, tree, key) },
    setLimit: async request => {
      const link = await bandwidth.change({ ...request, peer: request.peer === undefined ? undefined : canonicalPeerId(request.peer) })
      log.info({ link: link.name, limit: link.limit, override: link.override }, 'bandwidth limit changed')
      c.events.emit('limit-changed', { link: link.name, limit: link.limit })
      return link
    },
    setTreeWeight: async (tree, weight) => {
      validateTreeName(tree)
      const effective = await bandwidth.setTreeWeight(tree, weight)
      log.info({ tree, weight: effective }, 'tree weight changed')
      c.events.emit('limit-changed', { tree, weight: effective })
      return effective
    },
    verify: async (tree, options, signal) => {
      const result = await verifyTree({ catalog: c.store.catalog, index: c.store.index, fetch: c.repairFetch(tree) }, tree, options ?? {}, signal)
      trees.verified(tree, result.seq, new Set(result.problems.map(p => p.path)).size)
      return result
    },
    waitForSync: async (tree, options) => await trees.waitForSync(tree, options),
    diff: async (request, options) => await diffHeld(c, request, options),
    accept: async (tree, seq) => await trees.accept(validateTreeName(tree), seq),
    events: async options => { await followEvents(c.events, options) },
    shutdown: async () => { /* the control server's shutdown callback stops the process */ },
  }
}

/** Every peer configured or connected, with its traffic, strikes and ban. */
export function peerStatusOf (c: Pick<AgentApiComponents, 'node' | 'book' | 'stats' | 'bans'>): PeerStatus[] {
  const connected = new Set(c.node.getPeers().map(p => p.toString()))
  const ids = new Set([...c.book.peerNames.keys(), ...connected])
  return [...ids].map(peerId => {
    const s = c.stats.get(peerId)
    const named = c.book.peerNames.get(peerId)
    return { peerId, name: named?.name, addr: named?.addr, connected: connected.has(peerId), bytesUp: s.bytesUp, bytesDown: s.bytesDown, chunkBytesUp: s.chunkBytesUp, chunkBytesDown: s.chunkBytesDown, chunksUp: s.chunksServed, chunksDown: s.chunksReceived, badChunks: s.badChunks, strikes: s.strikes, bannedUntilMs: c.bans.bannedUntil(peerId) }
  })
}

async function agentStatus (c: AgentApiComponents): Promise<AgentStatus> {
  const peers = peerStatusOf(c)
  return {
    peerId: c.selfId,
    multiaddrs: c.node.getMultiaddrs().map(a => a.toString()),
    publisherKey: c.selfPublisherKey,
    version: AGENT_VERSION,
    startedAtMs: c.startedAtMs,
    trees: withServes(await c.trees.status(), c.config.serve),
    peers,
    links: c.bandwidth.status(),
    treeWeights: c.bandwidth.weights(),
    dashboard: dashboardOf(c.dashboardUrl()),
    ...(c.mirrorsUrl?.() === undefined ? {} : { mirrors: { url: c.mirrorsUrl() as string } }),
    ...((c.watches?.() ?? []).length === 0 ? {} : { watches: c.watches?.() }),
    envelopeRejections: c.refusals.rejections.snapshot(),
    counters: {
      ...c.refusals.counters,
      bytesUp: sum(peers, p => p.bytesUp),
      bytesDown: sum(peers, p => p.bytesDown),
      chunkBytesUp: sum(peers, p => p.chunkBytesUp),
      chunkBytesDown: sum(peers, p => p.chunkBytesDown),
    },
  }
}

/** Publishes with the agent's store and chunker pool, then tells the trees and the peers. */
async function publishAndAnnounce (c: AgentApiComponents, request: PublishRequest, signal?: AbortSignal): Promise<PublishSummary> {
  const { pool, log } = c
  const chunking = chunkingFor(c.config.chunking, request.tree)
  const result = await publishVersion({
    tree: request.tree, source: request.source, label: request.label, strict: request.strict, force: request.force, index: c.store.index, catalog: c.store.catalog, publisherKey: c.publisherKey,
    chunking, chunkFile: async (path, s, size, options) => await pool.chunkFile(path, chunking, s, size, options),
    verifyFile: async (path, chunks, s) => await pool.verifyFile(path, chunks, s), log, signal,
  })
  // an unchanged tree is the newest version already: known here and announced when it was published
  if (result.unchanged !== true) {
    await c.trees.published(result.envelope)
    await c.announcer.announce(result.envelope.bytes).catch(err => log.warn({ err }, 'announcement not sent; peers will learn the version from the heads exchange'))
    // a publisher keeps the newest versions like any site: without this its catalog kept every version's
    // record, manifest and deltas it ever published (found by the soak); its source roots stay indexed
    await applyRetention({ index: c.store.index, catalog: c.store.catalog, home: c.home, log }, request.tree)
      .catch(err => log.error({ tree: request.tree, err }, 'retention failed'))
  }
  const { envelope, stats: s } = result
  return { tree: envelope.tree, seq: envelope.seq, label: envelope.label, root: result.rootHex, files: s.files, bytes: s.bytes, chunks: s.chunks, newChunks: s.newChunks, newBytes: s.newBytes, cachedFiles: s.cachedFiles, verifiedFiles: s.verifiedFiles, manifestBytes: s.manifestBytes, durationMs: s.durationMs, hardlinks: s.hardlinks, skipped: result.skipped, ...(result.unchanged === true ? { unchanged: true } : {}) }
}

async function addPeer (c: AgentApiComponents, addr: string, name: string | undefined): Promise<void> {
  const peerId = checkPeerAddress(addr, c.selfId, [...c.book.peerNames.values()].map(p => ({ addr: p.addr, name: p.name })))
  await appendPeer(c.home.config, addr, name)
  c.book.peerNames.set(peerId, { name, addr })
  c.allowlist.add(peerId)
  c.dialer.add(addr)
}

/** The converse of addPeer: config.toml first (nothing changes if that fails), then the running parts. */
async function removePeer (c: AgentApiComponents, ref: string): Promise<RemovedPeer> {
  const peer = resolvePeerRef(ref, [...c.book.peerNames.values()])
  checkRemovable(peer, c.config.links)
  await removePeerEntry(c.home.config, peer.addr)
  c.book.peerNames.delete(peer.peerId)
  c.dialer.remove(peer.peerId)
  // off the allowlist: the gater refuses it from now on and its live connections are closed (net/node.ts)
  c.allowlist.remove(peer.peerId)
  c.log.info({ peer: peer.peerId, name: peer.name }, 'peer removed')
  return peer
}

async function trustKey (c: AgentApiComponents, tree: string, key: string): Promise<void> {
  validateTreeName(tree)
  parsePublisherKey(key)
  if (c.book.trust.get(tree)?.has(key) !== true) await appendTrust(c.home.config, tree, key)
  c.book.addTrust(tree, key)
  c.watchTree(tree)
  // envelopes we heard before trusting this key are offered again by the peers' heads
  for (const peer of c.node.getPeers()) {
    c.heads.requestHeads(peer).then(async received => await c.trees.peerHeads(peer.toString(), received), err => c.log.debug({ err }, 'heads request failed'))
  }
}

/** The changes between two versions held here (versions/version-diff.ts), each through onChange. */
async function diffHeld (c: AgentApiComponents, request: DiffRequest, options: DiffOptions): Promise<DiffSummary> {
  const tree = validateTreeName(request.tree)
  const seqs = await diffSeqsOf(c.store.catalog, tree, request.from, request.to)
  const counts = emptyCounts()
  for await (const change of diffVersions(c.store.catalog, tree, seqs, { signal: options.signal })) {
    counts[change.change]++
    await options.onChange(change)
  }
  return { tree, from: seqs.from, to: seqs.to, counts }
}

/** Calls onEvent for each event (of the tree, and of no tree) until the signal aborts; starts with 'following'. */
async function followEvents (hub: EventHub, options: EventsOptions): Promise<void> {
  const tree = options.tree === undefined ? undefined : validateTreeName(options.tree)
  const signal = options.signal
  if (signal?.aborted === true) return
  // to this reader only: where its stream starts
  options.onEvent(hub.make('following', tree === undefined ? {} : { tree }))
  const unsubscribe = hub.subscribe(event => { if (tree === undefined || event.tree === undefined || event.tree === tree) options.onEvent(event) })
  await new Promise<void>(resolve => {
    if (signal === undefined) return // followed for the life of the agent (in-process callers)
    signal.addEventListener('abort', () => { resolve() }, { once: true })
  })
  unsubscribe()
}

/**
 * Each tree's [[serve]] URLs. A subscription filtered by --include/--exclude lacks files, so its URLs are shown
 * but not listed (not gossiped, never in a metalink); a tree this site neither publishes nor holds is not listed.
 */
function withServes (trees: TreeStatus[], serve: AgentConfig['serve']): TreeStatus[] {
  if (serve.length === 0) return trees
  return trees.map(t => {
    const mine = serve.filter(s => s.tree === t.name)
    if (mine.length === 0) return t
    const listed = (t.include?.length ?? 0) === 0 && (t.exclude?.length ?? 0) === 0
    return { ...t, serves: mine.map(s => ({ url: s.url, location: s.location, preference: s.preference, listed })) }
  })
}

function dashboardOf (url: string | undefined): AgentStatus['dashboard'] {
  return url === undefined ? undefined : { url }
}

function canonicalPeerId (text: string): string {
  try {
    return peerIdFromString(text).toString()
  } catch {
    throw new LimitRequestError(`not a peer id: ${JSON.stringify(text.slice(0, 100))} (peer ids look like 12D3KooW…; see \`deltamesh peers list\`)`)
  }
}

function sum<T> (items: T[], of: (item: T) => number): number {
  return items.reduce((n, item) => n + of(item), 0)
}
