import { availableParallelism } from 'node:os'
import { peerIdFromPrivateKey, peerIdFromString } from '@libp2p/peer-id'
import type { PeerId } from '@libp2p/interface'
import { formatPublisherKey, parsePublisherKey, rawPublicKeyOf } from '../../protocol/envelope.js'
import { toHex } from '../../protocol/chunk-id.js'
import { validateTreeName } from '../../protocol/paths.js'
import type { HomeLayout } from '../core/home.js'
import type { Logger } from '../core/log.js'
import { appendPeer, appendTrust, loadConfig } from '../core/config.js'
import { loadPublisherKey } from '../core/identity.js'
import { applyMirrorAccess } from '../fs/mirror-access.js'
import { preciseTimesAvailable } from '../fs/precise-times.js'
import { openStore } from '../store/index.js'
import { ChunkerPool } from '../chunk/pool.js'
import type { ChunkRef } from '../../protocol/manifest.js'
import type { ChunkingParams } from '../../protocol/manifest.js'
import { chunkingFor } from '../../protocol/chunking.js'
import { createNode, loadOrCreatePeerKey, PeerAllowlist } from '../net/node.js'
import { BAD_CHUNK_STRIKES, PeerStats } from '../net/peer-stats.js'
import { banOnBudgetExceeded, PeerBans } from '../net/bans.js'
import { RejectionCounters, type RejectReason } from '../net/admission.js'
import { ChunkServer } from '../net/chunk-server.js'
import { ChunkClient } from '../net/chunk-client.js'
import { HeadsProtocol } from '../net/heads-protocol.js'
import { Announcer } from '../net/announcer.js'
import { Dialer } from '../net/dialer.js'
import { HaveService } from '../net/have-protocol.js'
import { bandwidthFromConfig, peerIdOfAddr } from '../bandwidth/from-config.js'
import { LimitRequestError } from '../bandwidth/manager.js'
import { pacedFetch } from '../sync/paced-fetch.js'
import { DeltaService } from '../net/delta-protocol.js'
import { publishVersion } from '../publish/publish.js'
import { verifyVersion } from '../versions/verify.js'
import { TreeManager } from './trees.js'
import { startOperations, type Operations } from './operations.js'
import type { AgentApi, AgentStatus, PeerStatus, PublishSummary } from '../api/api.js'

export const AGENT_VERSION = '0.1.0'
const BANS_STATE_KEY = 'peer-bans'

function sum<T> (items: T[], of: (item: T) => number): number {
  return items.reduce((n, item) => n + of(item), 0)
}

function canonicalPeerId (text: string): string {
  try {
    return peerIdFromString(text).toString()
  } catch {
    throw new LimitRequestError(`not a peer id: ${JSON.stringify(text.slice(0, 100))} (peer ids look like 12D3KooW…; see \`deltamesh peers list\`)`)
  }
}

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
 * (admission, syncs) and the dialer. Only wiring and start/stop order live here.
 */
export async function startAgent ({ home, log }: StartAgentOptions): Promise<RunningAgent> {
  const config = await loadConfig(home.config)
  // [mirror]: versions readable by the web server, everything else in HOME the agent's own (fixes older homes too)
  await applyMirrorAccess(home, config.mirror, log)
  const times = preciseTimesAvailable()
  if (!times.ok) log.warn({ reason: times.reason }, 'mtimes are set to the microsecond, not the nanosecond (rsync -a may list mirrored files as changed); to fix: install a C compiler and python3, then run node scripts/build-native.mjs in the deltamesh directory')
  const publisherKey = await loadPublisherKey(home.publisherKey)
  const selfPublisherKey = formatPublisherKey(rawPublicKeyOf(publisherKey))
  const privateKey = await loadOrCreatePeerKey(home.peerKey)
  const selfId = peerIdFromPrivateKey(privateKey).toString()
  const counters = { envelopesRejected: 0, chunksRejected: 0 }
  const rejections = new RejectionCounters()
  const onRejected = (code: RejectReason, reason: string, peer?: string): void => {
    rejections.count(code)
    counters.envelopesRejected = rejections.total
    // trees.ts logs its own refusals; the protocols' ones (before admission) are logged here
    if (peer !== undefined) log.warn({ peer, reason: code }, `rejected version: ${reason}`)
  }

  const trust = new Map<string, Set<string>>()
  const addTrust = (tree: string, key: string): void => { const set = trust.get(tree) ?? new Set<string>(); set.add(key); trust.set(tree, set) }
  for (const t of config.trust) addTrust(t.tree, t.key)
  const peerNames = new Map<string, { name?: string, addr: string }>()
  for (const p of config.peers) peerNames.set(peerIdOfAddr(p.addr), { name: p.name, addr: p.addr })

  const store = await openStore(home.db, {
    events: {
      onCorrupt: (id, location, reason) => { counters.chunksRejected++; log.warn({ chunk: toHex(id), path: location.relPath, reason }, 'indexed chunk no longer matches what is on disk; location dropped') },
    },
  })
  const pool = new ChunkerPool({ size: availableParallelism() })
  const allowlist = new PeerAllowlist(peerNames.keys())
  const bans = new PeerBans({ banMs: config.agent.banSeconds * 1000 })
  // bans survive a restart: a liar must not be forgiven by a crash or an upgrade
  bans.restore(await store.catalog.getState(BANS_STATE_KEY))
  bans.onBan(() => { store.catalog.putState(BANS_STATE_KEY, bans.snapshot()).catch(err => log.warn({ err }, 'could not save peer bans')) })
  const node = await createNode({ privateKey, listen: config.agent.listen, announce: config.agent.announce, allowlist, bans, start: false })

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
  const bandwidth = await bandwidthFromConfig(config, home, { peerLabel: peerId => peerNames.get(peerId)?.name ?? peerId })
  const chunkServer = new ChunkServer({
    libp2p: node,
    provider: {
      read: async (id, signal) => await store.index.readChunk(id, signal) ?? await store.catalog.getBlob(id),
      // paced per frame as sent: a compressed batch costs its compressed size against the upload limits
      pace: async (peer, bytes, signal) => await bandwidth.paceUpload(peer, bytes, signal),
    },
    allowlist,
    stats,
    onMisbehaviour,
  })
  const deltas = new DeltaService({
    libp2p: node,
    provider: {
      getMany: async (keys) => await store.catalog.getDeltas(keys),
      pace: async (peer, bytes, signal) => await bandwidth.paceUpload(peer, bytes, signal),
    },
    allowlist,
    stats,
    onMisbehaviour,
  })
  const chunkClient = new ChunkClient({ libp2p: node, stats, onMisbehaviour }, { maxOutstandingBytes: config.sync.windowBytes })
  const pubsub = node.services.pubsub

  let trees: TreeManager | undefined
  const heads = new HeadsProtocol({
    libp2p: node,
    provider: { heads: async () => trees?.heads() ?? [] },
    allowlist,
    stats,
    onHeads: (peerId, received) => { trees?.peerHeads(peerId.toString(), received).catch(err => log.error({ err }, 'handling heads failed')) },
    onMisbehaviour,
    onRejected: (peerId, code, reason) => onRejected(code, reason, peerId.toString()),
  })
  let ops: Operations | undefined
  const announcer = new Announcer({
    libp2p: node,
    pubsub,
    onEnvelope: (envelope, from) => { trees?.offer(envelope, from.toString(), 'gossip').catch(err => log.error({ err }, 'handling announcement failed')) },
    onStatus: (bytes, origin) => { ops?.onStatus(bytes, origin?.toString()) },
    onMisbehaviour,
    onRejected: (from, code, reason) => onRejected(code, reason, from.toString()),
  })
  // HAVEs go straight to the direct peers syncing the same version (agent/net/have-protocol.ts), not by gossip
  const haves = new HaveService({ libp2p: node, allowlist, stats, onHave: (origin, have) => { if (!bans.isBanned(origin)) trees?.onHave(origin, have) }, onMisbehaviour })
  const dialer = new Dialer({ libp2p: node }, { peers: config.peers.map(p => p.addr), bannedUntil: peer => bans.bannedUntil(peer) })

  const watchTree = (tree: string): void => { announcer.subscribe(tree); haves.subscribe(tree) }
  trees = new TreeManager({
    selfId,
    selfPublisherKey,
    home,
    index: store.index,
    catalog: store.catalog,
    log,
    fetchDeltas: async (peerId, keys, signal) => await deltas.fetch(peerIdFromString(peerId), keys, signal),
    fetchFor: tree => pacedFetch(async (peerId, wants, options) => await chunkClient.fetch(peerIdFromString(peerId), wants, options), bandwidth, tree),
    trustedKeys: tree => trust.get(tree) ?? new Set(),
    announceHave: (tree, seq, ids) => { haves.announce(tree, seq, ids).catch(err => log.debug({ err }, 'HAVE not sent')) },
    listenHaves: (tree, on) => { haves.listen(tree, on) },
    headsChanged: () => { heads.broadcastHeads().catch(err => log.debug({ err }, 'heads broadcast failed')) },
    watchTree,
    // the chunk client already struck the peer for the bad bytes; here they are only counted
    onBadChunk: () => { counters.chunksRejected++ },
    // a delta is checked only after the delta protocol delivered it: wrong bytes cost what a bad chunk costs
    onBadDelta: (peerId, reason) => { onMisbehaviour(peerId, reason, BAD_CHUNK_STRIKES) },
    onReceived: (_peerId, bytes, tree) => { ops?.onChunkReceived(tree, bytes) },
    onRejected: (code, reason) => onRejected(code, reason),
    onSyncEnded: (tree, outcome) => { ops?.onSyncEnded(tree, outcome) },
    verifyFile: async (path: string, chunks: readonly ChunkRef[], signal?: AbortSignal) => await pool.verifyFile(path, chunks, signal),
    chunkFile: async (path: string, params: ChunkingParams, signal?: AbortSignal) => await pool.chunkFile(path, params, signal),
  }, { windowBytes: config.sync.windowBytes })
  for (const tree of trust.keys()) watchTree(tree)

  const detachStats = stats.attach(node)
  const onDisconnect = (evt: CustomEvent<PeerId>): void => { trees?.peerGone(evt.detail.toString()) }
  node.addEventListener('peer:disconnect', onDisconnect)

  await node.start()
  await chunkServer.start()
  await deltas.start()
  await chunkClient.start()
  await heads.start()
  await announcer.start()
  await haves.start()
  await trees.load()
  await dialer.start()
  const startedAtMs = Date.now()
  log.info({ peerId: selfId, addrs: node.getMultiaddrs().map(a => a.toString()), publisherKey: selfPublisherKey }, 'agent started')

  let stopping: Promise<void> | undefined
  const stop = async (): Promise<void> => {
    stopping ??= (async () => {
      await trees?.stop()
      await dialer.stop()
      await haves.stop()
      await announcer.stop()
      await heads.stop()
      await chunkClient.stop()
      await chunkServer.stop()
      await deltas.stop()
      node.removeEventListener('peer:disconnect', onDisconnect)
      detachStats()
      await node.stop()
      bandwidth.close()
      await pool.close()
      await store.close()
    })()
    await stopping
  }
  const stopAll = async (): Promise<void> => { await ops?.stop(); await stop() }

  const peerStatus = (): PeerStatus[] => {
    const connected = new Set(node.getPeers().map(p => p.toString()))
    const ids = new Set([...peerNames.keys(), ...connected])
    return [...ids].map(peerId => {
      const c = stats.get(peerId)
      const named = peerNames.get(peerId)
      return { peerId, name: named?.name, addr: named?.addr, connected: connected.has(peerId), bytesUp: c.bytesUp, bytesDown: c.bytesDown, chunkBytesUp: c.chunkBytesUp, chunkBytesDown: c.chunkBytesDown, chunksUp: c.chunksServed, chunksDown: c.chunksReceived, badChunks: c.badChunks, strikes: c.strikes, bannedUntilMs: bans.bannedUntil(peerId) }
    })
  }

  const api: AgentApi = {
    status: async (): Promise<AgentStatus> => {
      const peers = peerStatus()
      return {
        peerId: selfId,
        multiaddrs: node.getMultiaddrs().map(a => a.toString()),
        publisherKey: selfPublisherKey,
        version: AGENT_VERSION,
        startedAtMs,
        trees: await (trees as TreeManager).status(),
        peers,
        links: bandwidth.status(),
        treeWeights: bandwidth.weights(),
        dashboard: ops?.dashboardUrl === undefined ? undefined : { url: ops.dashboardUrl },
        envelopeRejections: rejections.snapshot(),
        counters: {
          ...counters,
          bytesUp: sum(peers, p => p.bytesUp),
          bytesDown: sum(peers, p => p.bytesDown),
          chunkBytesUp: sum(peers, p => p.chunkBytesUp),
          chunkBytesDown: sum(peers, p => p.chunkBytesDown),
        },
      }
    },
    publish: async (request, signal): Promise<PublishSummary> => {
      const chunking = chunkingFor(config.chunking, request.tree)
      const result = await publishVersion({
        tree: request.tree, source: request.source, label: request.label, strict: request.strict, index: store.index, catalog: store.catalog, publisherKey,
        chunking, chunkFile: async (path, s, size, options) => await pool.chunkFile(path, chunking, s, size, options),
        verifyFile: async (path, chunks, s) => await pool.verifyFile(path, chunks, s), log, signal,
      })
      await (trees as TreeManager).published(result.envelope)
      await announcer.announce(result.envelope.bytes).catch(err => log.warn({ err }, 'announcement not sent; peers will learn the version from the heads exchange'))
      const { envelope, stats: s } = result
      return { tree: envelope.tree, seq: envelope.seq, label: envelope.label, root: result.rootHex, files: s.files, bytes: s.bytes, chunks: s.chunks, newChunks: s.newChunks, newBytes: s.newBytes, cachedFiles: s.cachedFiles, verifiedFiles: s.verifiedFiles, manifestBytes: s.manifestBytes, durationMs: s.durationMs, hardlinks: s.hardlinks, skipped: result.skipped }
    },
    subscribe: async request => { await (trees as TreeManager).subscribe(request) },
    unsubscribe: async tree => { await (trees as TreeManager).unsubscribe(tree) },
    addPeer: async (addr, name) => {
      const peerId = peerIdOfAddr(addr)
      if (!peerNames.has(peerId)) await appendPeer(home.config, addr, name)
      peerNames.set(peerId, { name, addr })
      allowlist.add(peerId)
      dialer.add(addr)
    },
    trust: async (tree, key) => {
      validateTreeName(tree)
      parsePublisherKey(key)
      if (trust.get(tree)?.has(key) !== true) await appendTrust(home.config, tree, key)
      addTrust(tree, key)
      watchTree(tree)
      // envelopes we heard before trusting this key are offered again by the peers' heads
      for (const peer of node.getPeers()) {
        heads.requestHeads(peer).then(async received => await trees?.peerHeads(peer.toString(), received), err => log.debug({ err }, 'heads request failed'))
      }
    },
    setLimit: async request => {
      const link = await bandwidth.change({ ...request, peer: request.peer === undefined ? undefined : canonicalPeerId(request.peer) })
      log.info({ link: link.name, limit: link.limit, override: link.override }, 'bandwidth limit changed')
      return link
    },
    setTreeWeight: async (tree, weight) => {
      validateTreeName(tree)
      const effective = await bandwidth.setTreeWeight(tree, weight)
      log.info({ tree, weight: effective }, 'tree weight changed')
      return effective
    },
    verify: async (tree, seq, signal) => await verifyVersion(store.catalog, tree, seq, signal),
    waitForSync: async (tree, options) => await (trees as TreeManager).waitForSync(tree, options),
    shutdown: async () => { /* the control server's shutdown callback stops the process */ },
  }
  try {
    ops = await startOperations({
      selfId,
      log,
      status: api.status,
      peers: peerStatus,
      configuredPeers: () => new Map([...peerNames].map(([id, p]) => [id, p.name])),
      connectedPeers: () => new Set(node.getPeers().map(p => p.toString())),
      publishStatus: async bytes => await announcer.publishStatus(bytes),
    }, {
      siteName: config.agent.name,
      statusIntervalMs: config.dashboard.statusIntervalMs,
      dashboard: config.dashboard,
    })
  } catch (err) {
    await stop()
    throw err
  }
  return { api, stop: stopAll, peerId: selfId }
}
