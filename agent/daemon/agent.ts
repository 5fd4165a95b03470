import type { KeyObject } from 'node:crypto'
import { availableParallelism } from 'node:os'
import { peerIdFromPrivateKey, peerIdFromString } from '@libp2p/peer-id'
import type { PeerId, PrivateKey } from '@libp2p/interface'
import { formatPublisherKey, rawPublicKeyOf } from '../../protocol/envelope.js'
import { toHex } from '../../protocol/chunk-id.js'
import type { HomeLayout } from '../core/home.js'
import type { Logger } from '../core/log.js'
import { loadConfig, type AgentConfig } from '../core/config.js'
import { loadPublisherKey } from '../core/identity.js'
import { applyMirrorAccess } from '../fs/mirror-access.js'
import { preciseTimesAvailable } from '../fs/precise-times.js'
import { openStore, type Store } from '../store/index.js'
import { ChunkerPool } from '../chunk/pool.js'
import type { ChunkRef } from '../../protocol/manifest.js'
import type { ChunkingParams } from '../../protocol/manifest.js'
import { createNode, loadOrCreatePeerKey, PeerAllowlist, type DeltameshNode } from '../net/node.js'
import { BAD_CHUNK_STRIKES, PeerStats } from '../net/peer-stats.js'
import { banOnBudgetExceeded, PeerBans } from '../net/bans.js'
import { ChunkServer } from '../net/chunk-server.js'
import { ChunkClient } from '../net/chunk-client.js'
import { HeadsProtocol } from '../net/heads-protocol.js'
import { Announcer } from '../net/announcer.js'
import { Dialer } from '../net/dialer.js'
import { HaveService } from '../net/have-protocol.js'
import { bandwidthFromConfig } from '../bandwidth/from-config.js'
import type { BandwidthManager } from '../bandwidth/manager.js'
import { pacedFetch } from '../sync/paced-fetch.js'
import { fetchFromAny } from '../sync/fetch-any.js'
import type { RepairFetch } from '../versions/repair.js'
import { DeltaService } from '../net/delta-protocol.js'
import { TreeManager } from './trees.js'
import { EventHub } from './events.js'
import { VersionHooks } from './version-hooks.js'
import { UnservableMarker } from './why-waiting.js'
import { startOperations, type Operations } from './operations.js'
import { createAgentApi, peerStatusOf, PeersAndTrust, RefusalCounts } from './api-impl.js'
import type { AgentApi } from '../api/api.js'

export { AGENT_VERSION } from './api-impl.js'
import { AGENT_VERSION } from './api-impl.js'
import { FileFactsSource } from '../mirrors/file-facts.js'
import { WatchedPublishes } from './watched-publish.js'
const BANS_STATE_KEY = 'peer-bans'

export interface StartAgentOptions {
  home: HomeLayout
  log: Logger
}

export interface RunningAgent {
  api: AgentApi
  stop: () => Promise<void>
  peerId: string
}

/**
 * Starts a site's daemon: store, chunker pool, libp2p node with the deltamesh protocols, the tree manager
 * (admission, syncs) and the dialer. Only wiring and start/stop order live here (the API: api-impl.ts).
 */
export async function startAgent ({ home, log }: StartAgentOptions): Promise<RunningAgent> {
  const site = await openSite(home, log)
  const events = new EventHub(log)
  const refusals = new RefusalCounts(log)
  const book = new PeersAndTrust(site.config)
  const late: LateParts = {}
  const { store, pool, bans } = await openStorage(home, site.config, refusals, log, (tree, seq) => late.trees?.chunkChanged(tree, seq))
  const allowlist = new PeerAllowlist(book.peerNames.keys())
  const net = await createNetwork({ home, log, site, book, refusals, store, bans, allowlist, late })
  const hooks = new VersionHooks({ home, catalog: store.catalog, log: log.child({ component: 'hooks' }), events })
  const trees = createTreeManager({ home, log, site, book, refusals, store, pool, net, late }, events, hooks)
  late.trees = trees
  for (const tree of book.trust.keys()) net.watchTree(tree)

  const detachStats = net.stats.attach(net.node)
  const onDisconnect = (evt: CustomEvent<PeerId>): void => { late.trees?.peerGone(evt.detail.toString()); events.emit('peer-disconnected', { peer: evt.detail.toString() }) }
  const onConnect = (evt: CustomEvent<PeerId>): void => { events.emit('peer-connected', { peer: evt.detail.toString() }) }
  net.node.addEventListener('peer:disconnect', onDisconnect)
  net.node.addEventListener('peer:connect', onConnect)
  const stopBanEvents = bans.onBan((peer, ban) => { events.emit('peer-banned', { peer, untilMs: ban.untilMs, reason: ban.reason }) })
  await startInOrder(net, trees)
  const startedAtMs = Date.now()
  log.info({ peerId: site.selfId, addrs: net.node.getMultiaddrs().map(a => a.toString()), publisherKey: site.selfPublisherKey }, 'agent started')

  let stopping: Promise<void> | undefined
  const stop = async (): Promise<void> => {
    stopping ??= (async () => {
      await stopInOrder(net, trees)
      net.node.removeEventListener('peer:disconnect', onDisconnect)
      net.node.removeEventListener('peer:connect', onConnect)
      stopBanEvents()
      detachStats()
      await net.node.stop()
      net.bandwidth.close()
      await pool.close()
      await store.close()
    })()
    await stopping
  }
  const stopAll = async (): Promise<void> => { await late.watches?.stop(); await late.ops?.stop(); await stop() }

  const repairFetch = repairFetchOf(site, net, refusals)
  const parts = {
    ...site, ...net, home, log, startedAtMs, store, pool, bans, allowlist, trees, book, refusals, repairFetch, events,
    dashboardUrl: () => late.ops?.dashboardUrl, mirrorsUrl: () => late.ops?.mirrorsUrl, watches: () => late.watches?.status() ?? [],
  }
  const api = createAgentApi(parts)
  try {
    late.ops = await startOperations({
      selfId: site.selfId,
      log,
      status: api.status,
      peers: () => peerStatusOf(parts),
      configuredPeers: () => new Map([...book.peerNames].map(([id, p]) => [id, p.name])),
      connectedPeers: () => new Set(net.node.getPeers().map(p => p.toString())),
      publishStatus: async bytes => await net.announcer.publishStatus(bytes),
      recentEvents: () => events.recentEvents(),
      facts: new FileFactsSource({ catalog: store.catalog, index: store.index }),
    }, {
      siteName: site.config.agent.name,
      statusIntervalMs: site.config.dashboard.statusIntervalMs,
      dashboard: site.config.dashboard,
      mirrors: site.config.mirrors,
      agentVersion: AGENT_VERSION,
    })
    // [[publish]] sources published on change, through the API's publish (which also announces)
    late.watches = new WatchedPublishes({ log, publish: api.publish, nextSeq: async tree => await nextSeq(store, tree) }, site.config.publish)
    await late.watches.start()
  } catch (err) {
    await late.watches?.stop()
    await late.ops?.stop()
    await stop()
    throw err
  }
  return { api, stop: stopAll, peerId: site.selfId }
}

/** verify --repair's fetch: the chunks a repair lacks locally, from any connected peer, paced like the tree's syncs. */
function repairFetchOf (site: Site, net: Network, refusals: RefusalCounts): (tree: string) => RepairFetch {
  return (tree) => async (wanted, onChunk, signal) => {
    await fetchFromAny({
      selfId: site.selfId,
      fetch: pacedFetch(async (peerId, wants, options) => await net.chunkClient.fetch(peerIdFromString(peerId), wants, options), net.bandwidth, tree),
      peers: net.node.getPeers().map(p => p.toString()),
      wanted,
      onChunk,
      onBadChunk: () => { refusals.chunkRejected() },
      windowBytes: site.config.sync.windowBytes,
      signal,
    })
  }
}

/** Who this site is: its configuration and keys, read from the home before anything runs. */
interface Site {
  config: AgentConfig
  publisherKey: KeyObject
  selfPublisherKey: string
  privateKey: PrivateKey
  selfId: string
}

async function openSite (home: HomeLayout, log: Logger): Promise<Site> {
  const config = await loadConfig(home.config)
  // [mirror]: versions readable by the web server, everything else in HOME the agent's own (fixes older homes too)
  await applyMirrorAccess(home, config.mirror, log)
  const times = preciseTimesAvailable()
  if (!times.ok) log.warn({ reason: times.reason }, 'mtimes are set to the microsecond, not the nanosecond (rsync -a may list mirrored files as changed); to fix: install a C compiler and python3, then run node scripts/build-native.mjs in the deltamesh directory')
  const publisherKey = await loadPublisherKey(home.publisherKey)
  const selfPublisherKey = formatPublisherKey(rawPublicKeyOf(publisherKey))
  const privateKey = await loadOrCreatePeerKey(home.peerKey)
  const selfId = peerIdFromPrivateKey(privateKey).toString()
  return { config, publisherKey, selfPublisherKey, privateKey, selfId }
}

/** The store (chunk index and catalog), the chunker pool, and the peer bans kept in the catalog. */
async function openStorage (home: HomeLayout, config: AgentConfig, refusals: RefusalCounts, log: Logger, onHeldDamaged: (tree: string, seq: number) => void): Promise<{ store: Store, pool: ChunkerPool, bans: PeerBans }> {
  let marker: UnservableMarker | undefined
  const store = await openStore(home.db, {
    events: {
      onCorrupt: (id, location, reason) => {
        refusals.chunkRejected()
        // a publisher's source edited since it was published: the version it published from it is marked
        // not fully servable; the first chunk of each file is worth a warning, the rest only debug lines
        void marker?.mark(location.rootId, location.relPath).then(marked => {
          const fields = { chunk: toHex(id), path: location.relPath, reason }
          if (marked?.held === true) { onHeldDamaged(marked.tree, marked.seq); log.warn({ ...fields, tree: marked.tree, seq: marked.seq }, `indexed chunk no longer matches what is on disk; location dropped: a file of ${marked.tree}@${marked.seq} was changed here; deltamesh verify --repair mends it`) } else if (marked === undefined) log.warn(fields, 'indexed chunk no longer matches what is on disk; location dropped')
          else if (marked.newFile) log.warn({ ...fields, tree: marked.tree, seq: marked.seq }, `source file changed since ${marked.tree}@${marked.seq} was published: its chunks cannot be served; publish again`)
          else log.debug({ ...fields, tree: marked.tree, seq: marked.seq }, 'another changed chunk of a published source file')
        }, err => log.error({ err }, 'could not mark a version not fully servable'))
      },
    },
  })
  marker = new UnservableMarker(store)
  const pool = new ChunkerPool({ size: availableParallelism() })
  const bans = new PeerBans({ banMs: config.agent.banSeconds * 1000 })
  // bans survive a restart: a liar must not be forgiven by a crash or an upgrade
  bans.restore(await store.catalog.getState(BANS_STATE_KEY))
  bans.onBan(() => { store.catalog.putState(BANS_STATE_KEY, bans.snapshot()).catch(err => log.warn({ err }, 'could not save peer bans')) })
  return { store, pool, bans }
}

/**
 * What is created after the protocols whose callbacks reach it: events that arrive before it exists are
 * dropped (nothing runs before startInOrder, and operations start last).
 */
interface LateParts {
  trees?: TreeManager
  ops?: Operations
  watches?: WatchedPublishes
}

/** The seq a tree's next version gets (publish.ts nextSeq: after the newest recorded and the current one). */
async function nextSeq (store: Store, tree: string): Promise<number> {
  const last = (await store.catalog.listVersions(tree)).reduce((m, v) => Math.max(m, v.seq), 0)
  return Math.max(last, (await store.catalog.getTree(tree))?.currentSeq ?? 0) + 1
}

/** The libp2p node and every deltamesh protocol on it, created but not started. */
interface Network {
  node: DeltameshNode
  stats: PeerStats
  onMisbehaviour: (peerId: string, reason: string, weight?: number) => void
  bandwidth: BandwidthManager
  chunkServer: ChunkServer
  deltas: DeltaService
  chunkClient: ChunkClient
  heads: HeadsProtocol
  announcer: Announcer
  haves: HaveService
  dialer: Dialer
  /** Listens to a tree's gossip topics (announcements and HAVEs). */
  watchTree: (tree: string) => void
}

interface Wiring {
  home: HomeLayout
  log: Logger
  site: Site
  book: PeersAndTrust
  refusals: RefusalCounts
  store: Store
  late: LateParts
}

async function createNetwork ({ home, log, site, book, refusals, store, bans, allowlist, late }: Wiring & { bans: PeerBans, allowlist: PeerAllowlist }): Promise<Network> {
  const { config } = site
  const node = await createNode({ privateKey: site.privateKey, listen: config.agent.listen, announce: config.agent.announce, allowlist, bans, start: false })
  const stats: PeerStats = new PeerStats({
    onBudgetExceeded: banOnBudgetExceeded({
      libp2p: node,
      get stats () { return stats },
      bans,
      onBanned: (peer, ban, strikes) => log.warn({ peer, strikes, untilMs: ban.untilMs, bans: ban.count, reason: ban.reason }, 'peer exceeded its misbehaviour budget; disconnected and banned'),
      onError: err => log.debug({ err }, 'hang up failed'),
    }),
  })
  const onMisbehaviour = (peerId: string, reason: string, weight?: number): void => { log.warn({ peer: peerId, reason }, 'peer misbehaved'); stats.strike(peerId, reason, weight) }
  // The sender paces what it serves; the receiver paces what it asks for (config [limits], [[links]]).
  const bandwidth = await bandwidthFromConfig(config, home, { peerLabel: peerId => book.peerNames.get(peerId)?.name ?? peerId })
  const pace = async (peer: string, bytes: number, signal: AbortSignal): Promise<void> => await bandwidth.paceUpload(peer, bytes, signal)
  const chunkServer = new ChunkServer({
    libp2p: node,
    provider: {
      read: async (id, signal) => await store.index.readChunk(id, signal) ?? await store.catalog.getBlob(id),
      // paced per frame as sent: a compressed batch costs its compressed size against the upload limits
      pace,
    },
    allowlist,
    stats,
    onMisbehaviour,
  })
  const deltas = new DeltaService({ libp2p: node, provider: { getMany: async (keys) => await store.catalog.getDeltas(keys), pace }, allowlist, stats, onMisbehaviour })
  const chunkClient = new ChunkClient({ libp2p: node, stats, onMisbehaviour }, { maxOutstandingBytes: config.sync.windowBytes })
  const heads = new HeadsProtocol({
    libp2p: node,
    provider: { heads: async () => late.trees?.heads() ?? [] },
    allowlist,
    stats,
    onHeads: (peerId, received) => { late.trees?.peerHeads(peerId.toString(), received).catch(err => log.error({ err }, 'handling heads failed')) },
    onMisbehaviour,
    onRejected: (peerId, code, reason) => refusals.versionRejected(code, reason, peerId.toString()),
  })
  const announcer = new Announcer({
    libp2p: node,
    pubsub: node.services.pubsub,
    onEnvelope: (envelope, from) => { late.trees?.offer(envelope, from.toString(), 'gossip').catch(err => log.error({ err }, 'handling announcement failed')) },
    onStatus: (bytes, origin) => { late.ops?.onStatus(bytes, origin?.toString()) },
    onMisbehaviour,
    onRejected: (from, code, reason) => refusals.versionRejected(code, reason, from.toString()),
  })
  // HAVEs go straight to the direct peers syncing the same version (agent/net/have-protocol.ts), not by gossip
  const haves = new HaveService({ libp2p: node, allowlist, stats, onHave: (origin, have) => { if (!bans.isBanned(origin)) late.trees?.onHave(origin, have) }, onMisbehaviour })
  const dialer = new Dialer({ libp2p: node }, { peers: config.peers.map(p => p.addr), bannedUntil: peer => bans.bannedUntil(peer) })
  const watchTree = (tree: string): void => { announcer.subscribe(tree); haves.subscribe(tree) }
  return { node, stats, onMisbehaviour, bandwidth, chunkServer, deltas, chunkClient, heads, announcer, haves, dialer, watchTree }
}

/** The trees: admission of versions, who holds what, and the syncs, fed by the protocols and the chunker pool. */
function createTreeManager ({ home, log, site, book, refusals, store, pool, net, late }: Wiring & { pool: ChunkerPool, net: Network }, events: EventHub, hooks: VersionHooks): TreeManager {
  const { deltas, chunkClient, bandwidth, haves, heads } = net
  return new TreeManager({
    selfId: site.selfId,
    selfPublisherKey: site.selfPublisherKey,
    home,
    index: store.index,
    catalog: store.catalog,
    log,
    fetchDeltas: async (peerId, keys, signal) => await deltas.fetch(peerIdFromString(peerId), keys, signal),
    fetchFor: tree => pacedFetch(async (peerId, wants, options) => await chunkClient.fetch(peerIdFromString(peerId), wants, options), bandwidth, tree),
    trustedKeys: tree => book.trust.get(tree) ?? new Set(),
    announceHave: (tree, seq, ids) => { haves.announce(tree, seq, ids).catch(err => log.debug({ err }, 'HAVE not sent')) },
    listenHaves: (tree, on) => { haves.listen(tree, on) },
    headsChanged: () => { heads.broadcastHeads().catch(err => log.debug({ err }, 'heads broadcast failed')) },
    watchTree: net.watchTree,
    // the chunk client already struck the peer for the bad bytes; here they are only counted
    onBadChunk: () => { refusals.chunkRejected() },
    // a delta is checked only after the delta protocol delivered it: wrong bytes cost what a bad chunk costs
    onBadDelta: (peerId, reason) => { net.onMisbehaviour(peerId, reason, BAD_CHUNK_STRIKES) },
    onReceived: (_peerId, bytes, tree) => { late.ops?.onChunkReceived(tree, bytes) },
    onRejected: (code, reason) => refusals.versionRejected(code, reason),
    onSyncEnded: (tree, outcome) => { late.ops?.onSyncEnded(tree, outcome) },
    verifyFile: async (path: string, chunks: readonly ChunkRef[], signal?: AbortSignal) => await pool.verifyFile(path, chunks, signal),
    chunkFile: async (path: string, params: ChunkingParams, signal?: AbortSignal) => await pool.chunkFile(path, params, signal),
    events,
    hooks,
    peerName: peerId => book.peerNames.get(peerId)?.name,
    canOwn: (peerId) => late.ops?.canOwn(peerId) ?? true,
    explainMissing: (tree, seq) => {
      const sites = late.ops?.cannotServe(tree, seq) ?? []
      return sites.length === 0 ? undefined : `${sites.join(', ')} cannot serve ${tree}@${seq} completely: its source changed after it was published; publish again there`
    },
  }, { windowBytes: site.config.sync.windowBytes })
}

/**
 * The node first, then the protocols that answer peers, then the trees (which resume interrupted syncs and
 * need the protocols), and dialing last, so that a peer we reach finds everything answering.
 */
async function startInOrder (net: Network, trees: TreeManager): Promise<void> {
  await net.node.start()
  await net.chunkServer.start()
  await net.deltas.start()
  await net.chunkClient.start()
  await net.heads.start()
  await net.announcer.start()
  await net.haves.start()
  await trees.load()
  await net.dialer.start()
}

/** The reverse: syncs first (they use the protocols), then dialing and the protocols. */
async function stopInOrder (net: Network, trees: TreeManager): Promise<void> {
  await trees.stop()
  await net.dialer.stop()
  await net.haves.stop()
  await net.announcer.stop()
  await net.heads.stop()
  await net.chunkClient.stop()
  await net.chunkServer.stop()
  await net.deltas.stop()
}
