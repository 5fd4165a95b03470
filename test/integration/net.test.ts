import { generateKeyPairSync } from 'node:crypto'
import { mkdtemp, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { lpStream } from '@libp2p/utils'
import type { PeerId } from '@libp2p/interface'
import { chunkIdOf, toHex, type ChunkId } from '../../protocol/chunk-id.js'
import { rawPublicKeyOf, signEnvelope, type Envelope } from '../../protocol/envelope.js'
import { HOLE_CHUNK_ID } from '../../protocol/manifest.js'
import { brotliCompressSync } from 'node:zlib'
import { randomBytes } from 'node:crypto'
import { CHUNKS_PROTOCOL, CHUNKS_PROTOCOL_1_1, HAVES_PROTOCOL, STATUS_TOPIC, treeTopic } from '../../protocol/ids.js'
import { decodeMessage, encodeMessage, type HeadEntry } from '../../protocol/messages.js'
import { MAX_OUTSTANDING_WANTS, MAX_WANTS_PER_FRAME } from '../../protocol/wire-limits.js'
import { createNode, loadOrCreatePeerKey, PeerAllowlist, type DeltameshNode } from '../../agent/net/node.js'
import { ChunkClient, ChunkServer, DEFAULT_READ_AHEAD, type ChunkProvider, type ChunkClientInit, type ChunkServerInit } from '../../agent/net/chunk-protocol.js'
import { HeadsProtocol, type ReceivedHead } from '../../agent/net/heads-protocol.js'
import { Announcer } from '../../agent/net/announcer.js'
import { HaveService } from '../../agent/net/have-protocol.js'
import type { HaveMessage } from '../../protocol/have.js'
import { Dialer, type DialerComponents } from '../../agent/net/dialer.js'
import { BAD_CHUNK_STRIKES, PeerStats } from '../../agent/net/peer-stats.js'

interface Startable { stop (): Promise<void> | void }
const running: Startable[] = []
const tempDirs: string[] = []

afterEach(async () => {
  // services first, then nodes (reverse order of start)
  for (const s of running.splice(0).reverse()) await s.stop()
  for (const d of tempDirs.splice(0)) await rm(d, { recursive: true, force: true })
})

async function started<T extends Startable & { start (): Promise<void> }> (s: T): Promise<T> {
  await s.start()
  running.push(s)
  return s
}

interface Peer {
  node: DeltameshNode
  allowlist: PeerAllowlist
  stats: PeerStats
  strikes: Array<[string, string]>
}

async function peer (): Promise<Peer> {
  const allowlist = new PeerAllowlist()
  const node = await createNode({
    privateKey: await generateKeyPair('Ed25519'),
    listen: ['/ip4/127.0.0.1/tcp/0'],
    allowlist,
    gossip: { heartbeatInterval: 100 },
  })
  running.push(node)
  const strikes: Array<[string, string]> = []
  const stats = new PeerStats()
  return { node, allowlist, stats, strikes }
}

function allowEachOther (...peers: Peer[]): void {
  for (const a of peers) for (const b of peers) if (a !== b) a.allowlist.add(b.node.peerId)
}

async function connect (from: Peer, to: Peer): Promise<void> {
  await from.node.dial(to.node.getMultiaddrs()[0]!)
}

function misbehaviour (p: Peer) {
  return p.stats.misbehaviourHandler((peerId, reason) => p.strikes.push([peerId, reason]))
}

/** A provider over an in-memory map, with optional per-read delay and lies. */
function mapProvider (chunks: Map<string, Uint8Array>, opts: { delayMs?: number, lie?: boolean, never?: boolean } = {}): ChunkProvider {
  return {
    async read (id) {
      if (opts.never === true) return await new Promise<never>(() => {})
      if (opts.delayMs !== undefined) await new Promise(resolve => setTimeout(resolve, opts.delayMs))
      const bytes = chunks.get(toHex(id))
      if (bytes === undefined || opts.lie !== true) return bytes
      const copy = Buffer.from(bytes)
      copy[0] = (copy[0] ?? 0) ^ 0xff
      return copy
    },
  }
}

function makeChunks (count: number, size: number, seed = 0): { chunks: Map<string, Uint8Array>, wants: Array<{ id: ChunkId, size: number }> } {
  const chunks = new Map<string, Uint8Array>()
  const wants: Array<{ id: ChunkId, size: number }> = []
  for (let i = 0; i < count; i++) {
    const bytes = Buffer.alloc(size, (i + seed) & 0xff)
    bytes.writeUInt32BE(i, 0)
    bytes.writeUInt32BE(seed, 4)
    const id = chunkIdOf(bytes)
    chunks.set(toHex(id), bytes)
    wants.push({ id, size })
  }
  return { chunks, wants }
}

async function servePair (provider: ChunkProvider, clientInit: ChunkClientInit = {}, serverInit: ChunkServerInit = {}) {
  const server = await peer()
  const client = await peer()
  allowEachOther(server, client)
  const chunkServer = await started(new ChunkServer({ libp2p: server.node, provider, stats: server.stats, onMisbehaviour: misbehaviour(server) }, serverInit))
  const chunkClient = await started(new ChunkClient({ libp2p: client.node, stats: client.stats, onMisbehaviour: misbehaviour(client) }, clientInit))
  await connect(client, server)
  return { server, client, chunkClient, chunkServer }
}

const { privateKey: publisherKey } = generateKeyPairSync('ed25519')
function envelopeFor (tree: string, seq: number): Envelope {
  return signEnvelope({
    tree, seq, label: `v${seq}`, createdAtMs: 1_767_000_000_000 + seq, rootHash: chunkIdOf(Buffer.from(`${tree}@${seq}`)),
    rootSize: 36, publisherKey: rawPublicKeyOf(publisherKey),
  }, publisherKey)
}

/** The node as a Dialer sees it, with the time of every dial the dialer makes recorded. */
function recordingDials (node: DeltameshNode, dials: number[]): DialerComponents['libp2p'] {
  return {
    dial: async (target, options) => { dials.push(Date.now()); return await node.dial(target, options) },
    getConnections: peerId => node.getConnections(peerId),
    addEventListener: node.addEventListener.bind(node),
    removeEventListener: node.removeEventListener.bind(node),
    logger: node.logger,
  }
}

async function waitFor (what: string, check: () => boolean, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 20))
  }
}

describe('node and allowlist', () => {
  it('two allowed nodes exchange heads on connect', async () => {
    const a = await peer()
    const b = await peer()
    allowEachOther(a, b)
    const got = { a: [] as ReceivedHead[][], b: [] as ReceivedHead[][] }
    const headsOf = (tree: string, seq: number, complete: boolean): HeadEntry => ({ tree, seq, complete, envelope: envelopeFor(tree, seq).bytes })
    await started(new HeadsProtocol({ libp2p: a.node, allowlist: a.allowlist, provider: { heads: async () => [headsOf('fedora/40', 2, true)] }, onHeads: (_p, h) => got.a.push(h) }))
    await started(new HeadsProtocol({ libp2p: b.node, allowlist: b.allowlist, provider: { heads: async () => [headsOf('centos/10', 5, false)] }, onHeads: (_p, h) => got.b.push(h) }))
    await connect(a, b)
    await waitFor('heads on both sides', () => got.a.length === 1 && got.b.length === 1)
    expect(got.a[0]?.map(h => [h.envelope.tree, h.envelope.seq, h.complete])).toEqual([['centos/10', 5, false]])
    expect(got.b[0]?.map(h => [h.envelope.tree, h.envelope.seq, h.complete])).toEqual([['fedora/40', 2, true]])
  })

  it('a node not on the allowlist cannot connect and receives no heads or chunks', async () => {
    const a = await peer()
    const b = await peer()
    const stranger = await peer()
    allowEachOther(a, b)
    stranger.allowlist.add(a.node.peerId) // the stranger wants in; a has not listed it
    const { chunks, wants } = makeChunks(3, 1000)
    await started(new ChunkServer({ libp2p: a.node, provider: mapProvider(chunks) }))
    const heardByStranger: ReceivedHead[][] = []
    await started(new HeadsProtocol({ libp2p: a.node, allowlist: a.allowlist, provider: { heads: async () => [{ tree: 'x', seq: 1, complete: true, envelope: envelopeFor('x', 1).bytes }] }, onHeads: () => {} }))
    await started(new HeadsProtocol({ libp2p: stranger.node, provider: { heads: async () => [] }, onHeads: (_p, h) => heardByStranger.push(h) }))
    // Noise's XX handshake tells the responder who the initiator is only in its last message, so the
    // stranger's dial may briefly "succeed" on its side; a drops it before any protocol stream can run.
    await stranger.node.dial(a.node.getMultiaddrs()[0]!).catch(() => undefined)
    await waitFor('the stranger\'s connection to be dropped', () => stranger.node.getConnections(a.node.peerId).length === 0)
    // and a refuses to dial out to it
    await expect(a.node.dial(stranger.node.getMultiaddrs()[0]!)).rejects.toThrow()
    const strangerClient = await started(new ChunkClient({ libp2p: stranger.node }, { openTimeoutMs: 2000 }))
    const delivered: ChunkId[] = []
    const result = await strangerClient.fetch(a.node.peerId, wants, { onBlock: id => { delivered.push(id) } })
    expect(delivered).toEqual([])
    expect(result.failed.map(f => f.reason)).toEqual(['unreachable', 'unreachable', 'unreachable'])
    await new Promise(resolve => setTimeout(resolve, 200))
    expect(heardByStranger).toEqual([])
    expect(a.node.getConnections(stranger.node.peerId)).toEqual([])
    // b, which is listed, gets in
    await connect(b, a)
    await waitFor('b admitted', () => a.node.getConnections(b.node.peerId).length > 0)
  })

  it('removing a peer from the allowlist closes its connections', async () => {
    const a = await peer()
    const b = await peer()
    allowEachOther(a, b)
    await connect(a, b)
    a.allowlist.remove(b.node.peerId)
    await waitFor('hang up', () => a.node.getConnections(b.node.peerId).length === 0)
    await expect(a.node.dial(b.node.getMultiaddrs()[0]!)).rejects.toThrow()
  })

  it('peer stats track connections and call the strike budget', async () => {
    const a = await peer()
    const b = await peer()
    allowEachOther(a, b)
    const over: Array<[string, number]> = []
    const stats = new PeerStats({ maxStrikes: 2, onBudgetExceeded: (p, n) => over.push([p, n]) })
    const detach = stats.attach(a.node)
    await connect(a, b)
    const bId = b.node.peerId.toString()
    await waitFor('connectedSince', () => stats.get(bId).connectedSince !== undefined)
    stats.strike(bId, 'one')
    stats.strike(bId, 'two')
    expect(over).toEqual([[bId, 2]])
    await a.node.hangUp(b.node.peerId)
    await waitFor('disconnected', () => stats.get(bId).connectedSince === undefined)
    detach()
    expect(stats.snapshot()[bId]).toMatchObject({ strikes: 2, lastStrike: 'two' })
  })

  it('loadOrCreatePeerKey creates a 0600 key once and reloads the same identity', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'deltamesh-key-'))
    tempDirs.push(dir)
    const path = join(dir, 'sub', 'peer.key')
    const k1 = await loadOrCreatePeerKey(path)
    const k2 = await loadOrCreatePeerKey(path)
    expect(k1.type).toBe('Ed25519')
    expect(k2.equals(k1)).toBe(true)
    expect((await stat(path)).mode & 0o777).toBe(0o600)
  })

  it('the dialer connects on start and redials after a disconnect', async () => {
    const a = await peer()
    const b = await peer()
    allowEachOther(a, b)
    const addr = b.node.getMultiaddrs()[0]!
    expect(addr.toString()).toContain('/p2p/')
    const dials: number[] = []
    const dialer = await started(new Dialer({ libp2p: recordingDials(a.node, dials) }, { peers: [addr], backoffsMs: [20, 40], jitter: 0.5 }))
    await waitFor('first connection', () => a.node.getConnections(b.node.peerId).length > 0)
    // b must hold its end before it hangs up: right after a's upgrade it may not yet, and hangUp closes nothing
    await waitFor('b holds the connection', () => b.node.getConnections(a.node.peerId).length > 0)
    const first = a.node.getConnections(b.node.peerId)[0]!.id
    expect(dials).toHaveLength(1)
    let disconnects = 0
    a.node.addEventListener('peer:disconnect', evt => { if (evt.detail.equals(b.node.peerId)) disconnects++ })
    await b.node.hangUp(a.node.peerId)
    await waitFor('a sees the disconnect', () => disconnects > 0)
    // a new connection, dialled by a's dialer (b does not dial, and libp2p does not reconnect on its own)
    await waitFor('redial', () => a.node.getConnections(b.node.peerId).some(c => c.id !== first && c.direction === 'outbound'))
    expect(dials).toHaveLength(2)
    expect(dialer.peers()).toEqual([b.node.peerId.toString()])
    const delays = Array.from({ length: 50 }, (_, i) => dialer.delay(i % 3))
    expect(Math.min(...delays)).toBeGreaterThanOrEqual(10)
    expect(Math.max(...delays)).toBeLessThanOrEqual(60)
  })

  it('the dialer keeps retrying a peer that is down, with backoff', async () => {
    const a = await peer()
    const b = await peer()
    allowEachOther(a, b)
    const addr = b.node.getMultiaddrs()[0]!
    await b.node.stop()
    const dials: number[] = []
    const dialer = await started(new Dialer({ libp2p: recordingDials(a.node, dials) }, { backoffsMs: [30, 60, 120], jitter: 0 }))
    dialer.add(addr)
    await waitFor('three retries', () => dials.length >= 4)
    // each retry waits its backoff after the failed dial (a timer may fire a millisecond early: its start is rounded)
    const gaps = dials.slice(1, 4).map((t, i) => t - dials[i]!)
    gaps.forEach((gap, i) => expect(gap, `gaps ${gaps.join(', ')} ms`).toBeGreaterThanOrEqual([30, 60, 120][i]! - 2))
    await b.node.start() // same key, new port: add the new address at runtime
    dialer.add(b.node.getMultiaddrs()[0]!)
    await waitFor('connection after restart', () => a.node.getConnections(b.node.peerId).length > 0)
  })

  it('16 sites on one IP address dial one origin at once, and its gossip reaches all 16', async () => {
    // libp2p refuses a host's 6th inbound connection per second, and gossipsub scores down peers beyond 10
    // per IP address until it no longer publishes to them. Both held on 17 agents on one host (scale
    // benchmark): dials refused, HAVEs dropped, the swarm fell back to a star.
    const origin = await peer()
    const sites = await Promise.all(Array.from({ length: 16 }, async () => await peer()))
    allowEachOther(origin, ...sites)
    await Promise.all(sites.map(async s => { await connect(s, origin) }))
    await waitFor('16 connections at the origin', () => origin.node.getPeers().length === 16)
    const topic = 'deltamesh-test/colocation'
    const heard = new Set<string>()
    for (const s of sites) {
      s.node.services.pubsub.subscribe(topic)
      s.node.services.pubsub.addEventListener('gossipsub:message', evt => { if (evt.detail.msg.topic === topic) heard.add(s.node.peerId.toString()) })
    }
    await waitFor('subscriptions seen', () => origin.node.services.pubsub.getSubscribers(topic).length === 16, 15_000)
    // a few heartbeats: peer scores (and any colocation penalty) apply from then on
    await new Promise(resolve => setTimeout(resolve, 500))
    await origin.node.services.pubsub.publish(topic, new TextEncoder().encode('v2 is out'))
    await waitFor('every site heard it', () => heard.size === 16, 15_000)
  }, 60_000)
})

describe('chunk protocol', () => {
  it('fetches 200 chunks through the windowed client (a 1.0.0 server: one BLOCK frame per chunk)', async () => {
    const { chunks, wants } = makeChunks(200, 20_000)
    const { server, client, chunkClient } = await servePair(mapProvider(chunks), { maxOutstandingBytes: 256 * 1024, maxOutstandingChunks: 16 }, { compression: false })
    const got = new Map<string, number>()
    const result = await chunkClient.fetch(server.node.peerId, wants, { onBlock: (id, bytes) => { got.set(toHex(id), bytes.byteLength) } })
    expect(result.failed).toEqual([])
    expect(result.delivered).toBe(200)
    expect(got.size).toBe(200)
    const counters = client.stats.get(server.node.peerId.toString())
    expect(counters).toMatchObject({ chunksReceived: 200, chunkBytesDown: 200 * 20_000, badChunks: 0 })
    // frames add a small header per BLOCK (tag, id, length prefixes), counted in bytesDown only
    expect(counters.bytesDown).toBeGreaterThan(200 * 20_000)
    expect(counters.bytesDown).toBeLessThan(200 * 20_100)
    await waitFor('server counters', () => server.stats.get(client.node.peerId.toString()).chunksServed === 200)
    // the stream is long-lived: a second fetch reuses it, and duplicate ids are each answered
    const again = await chunkClient.fetch(server.node.peerId, [wants[0]!, wants[0]!, wants[1]!], { onBlock: () => {} })
    expect(again).toMatchObject({ delivered: 3, failed: [] })
  })

  it('1.1.0: compressible chunks travel in compressed batches, paced and counted at their wire size', async () => {
    const { chunks, wants } = makeChunks(200, 20_000)
    const paced: number[] = []
    const provider: ChunkProvider = { ...mapProvider(chunks), pace: async (_peer, bytes) => { paced.push(bytes) } }
    const { server, client, chunkClient, chunkServer } = await servePair(provider, { maxOutstandingBytes: 1024 * 1024, maxOutstandingChunks: 64 })
    const got = new Map<string, Uint8Array>()
    const result = await chunkClient.fetch(server.node.peerId, wants, { onBlock: (id, bytes) => { got.set(toHex(id), Buffer.from(bytes)) } })
    expect(result).toMatchObject({ delivered: 200, bytes: 200 * 20_000, failed: [] })
    const differing = [...chunks].filter(([hex, bytes]) => Buffer.compare(got.get(hex) ?? Buffer.alloc(0), bytes) !== 0)
    expect(differing.length).toBe(0)
    const counters = client.stats.get(server.node.peerId.toString())
    expect(counters).toMatchObject({ chunksReceived: 200, chunkBytesDown: 200 * 20_000 })
    // each chunk is 20 kB of one repeated byte: batches compress it to a few percent
    expect(counters.bytesDown).toBeLessThan(200 * 20_000 / 20)
    expect(result.wireBytes).toBeGreaterThan(0)
    expect(result.wireBytes).toBeLessThanOrEqual(counters.bytesDown + 200) // shares of a frame are rounded per chunk
    expect(chunkServer.compressionStats.batches).toBeGreaterThan(0)
    expect(chunkServer.compressionStats.batches).toBeLessThan(200)
    // the upload pacer was asked for what crossed the wire, not for the raw chunk bytes
    const pacedTotal = paced.reduce((a, b) => a + b, 0)
    expect(pacedTotal).toBeLessThan(200 * 20_000 / 20)
    expect(pacedTotal).toBeGreaterThanOrEqual(counters.bytesDown)
  })

  it('1.1.0: small chunks are read further ahead, so a batch carries more than DEFAULT_READ_AHEAD of them', async () => {
    const { chunks, wants } = makeChunks(512, 1000)
    const { server, chunkClient, chunkServer } = await servePair(mapProvider(chunks), { maxOutstandingBytes: 1024 * 1024, maxOutstandingChunks: 512 })
    const result = await chunkClient.fetch(server.node.peerId, wants, { onBlock: () => {} })
    expect(result).toMatchObject({ delivered: 512, failed: [] })
    // with DEFAULT_READ_AHEAD reads in flight a batch held at most 16 chunks: ≥ 32 batches for 512
    expect(chunkServer.compressionStats.batches).toBeGreaterThan(0)
    expect(chunkServer.compressionStats.batches).toBeLessThan(512 / DEFAULT_READ_AHEAD)
  })

  it('1.1.0: incompressible chunks are judged by their bytes and sent as plain BLOCKs', async () => {
    const chunks = new Map<string, Uint8Array>()
    const wants: Array<{ id: ChunkId, size: number }> = []
    for (let i = 0; i < 40; i++) {
      const bytes = randomBytes(30_000)
      chunks.set(toHex(chunkIdOf(bytes)), bytes)
      wants.push({ id: chunkIdOf(bytes), size: bytes.byteLength })
    }
    const { server, client, chunkClient, chunkServer } = await servePair(mapProvider(chunks))
    const result = await chunkClient.fetch(server.node.peerId, wants, { onBlock: () => {} })
    expect(result).toMatchObject({ delivered: 40, failed: [] })
    const down = client.stats.get(server.node.peerId.toString()).bytesDown
    expect(down).toBeGreaterThan(40 * 30_000)
    expect(down).toBeLessThan(40 * 30_100)
    expect(chunkServer.compressionStats).toMatchObject({ batches: 0, incompressibleChunks: 40 })
  })

  it('1.1.0: a BLOCKS frame that inflates beyond its declared size is rejected without inflating it, and struck', async () => {
    const liar = await peer()
    const client = await peer()
    allowEachOther(liar, client)
    const { wants } = makeChunks(2, 100)
    // 16 MiB of zeros compress to a few bytes: a bomb, declared as two chunks of 100 bytes
    const bomb = brotliCompressSync(Buffer.alloc(16 * 1024 * 1024))
    await liar.node.handle(CHUNKS_PROTOCOL_1_1, async (stream) => {
      const lp = lpStream(stream)
      await lp.read()
      await lp.write(encodeMessage({ type: 'BLOCKS', codec: 'br', entries: wants.map(w => ({ id: w.id, size: 100 })), payload: bomb }))
    })
    const chunkClient = await started(new ChunkClient({ libp2p: client.node, stats: client.stats, onMisbehaviour: misbehaviour(client) }))
    await connect(client, liar)
    const rssBefore = process.memoryUsage().rss
    const result = await chunkClient.fetch(liar.node.peerId, wants, { onBlock: () => { throw new Error('nothing may be delivered') } })
    expect(result.failed.map(f => f.reason)).toEqual(['protocol-error', 'protocol-error'])
    expect(client.strikes.length).toBe(1)
    expect(client.strikes[0]?.[1]).toMatch(/inflate/)
    expect(process.memoryUsage().rss - rssBefore).toBeLessThan(48 * 1024 * 1024)
  })

  it('a BLOCKS frame on a 1.0.0 stream is a protocol violation', async () => {
    const liar = await peer()
    const client = await peer()
    allowEachOther(liar, client)
    const { chunks, wants } = makeChunks(1, 100)
    const bytes = chunks.get(toHex(wants[0]!.id))!
    await liar.node.handle(CHUNKS_PROTOCOL, async (stream) => {
      const lp = lpStream(stream)
      await lp.read()
      await lp.write(encodeMessage({ type: 'BLOCKS', codec: 'br', entries: [{ id: wants[0]!.id, size: 100 }], payload: brotliCompressSync(bytes) }))
    })
    const chunkClient = await started(new ChunkClient({ libp2p: client.node, stats: client.stats, onMisbehaviour: misbehaviour(client) }))
    await connect(client, liar)
    const result = await chunkClient.fetch(liar.node.peerId, wants, { onBlock: () => {} })
    expect(result.failed.map(f => f.reason)).toEqual(['protocol-error'])
    expect(client.strikes[0]?.[1]).toMatch(/unexpected BLOCKS/)
  })

  it('reports DONT_HAVE per id and delivers the rest', async () => {
    const { chunks, wants } = makeChunks(10, 1000)
    const missing = makeChunks(3, 1000, 99).wants
    const { server, chunkClient } = await servePair(mapProvider(chunks))
    const result = await chunkClient.fetch(server.node.peerId, [...wants, ...missing], { onBlock: () => {} })
    expect(result.delivered).toBe(10)
    expect(result.failed.map(f => [toHex(f.id), f.reason]).sort()).toEqual(missing.map(m => [toHex(m.id), 'dont-have']).sort())
  })

  it('a hole is answered DONT_HAVE like an unknown chunk, whatever the provider holds under its id', async () => {
    const { chunks, wants } = makeChunks(2, 1000)
    const { server, chunkClient } = await servePair(mapProvider(new Map([...chunks, [toHex(HOLE_CHUNK_ID), new Uint8Array(1000)]])))
    const result = await chunkClient.fetch(server.node.peerId, [...wants, { id: HOLE_CHUNK_ID, size: 1000 }], { onBlock: () => {} })
    expect(result.delivered).toBe(2)
    expect(result.failed.map(f => [toHex(f.id), f.reason])).toEqual([[toHex(HOLE_CHUNK_ID), 'dont-have']])
  })

  it('a lying server: hash mismatch is reported, nothing is delivered, the server is struck', async () => {
    const { chunks, wants } = makeChunks(20, 5000)
    const { server, client, chunkClient } = await servePair(mapProvider(chunks, { lie: true }))
    const delivered: ChunkId[] = []
    const result = await chunkClient.fetch(server.node.peerId, wants, { onBlock: id => { delivered.push(id) } })
    expect(delivered).toEqual([])
    expect(result.failed).toHaveLength(20)
    expect(new Set(result.failed.map(f => f.reason))).toEqual(new Set(['hash-mismatch']))
    expect(result.failed[0]?.error?.name).toBe('ChunkHashMismatchError')
    const serverId = server.node.peerId.toString()
    expect(client.stats.get(serverId)).toMatchObject({ badChunks: 20, strikes: 20 * BAD_CHUNK_STRIKES, chunksReceived: 0 })
    expect(client.strikes[0]?.[0]).toBe(serverId)
  })

  it('server stopping mid-transfer fails the outstanding ids promptly', async () => {
    const { chunks, wants } = makeChunks(100, 10_000)
    const { server, chunkClient } = await servePair(mapProvider(chunks, { delayMs: 20 }), { stallTimeoutMs: 60_000 })
    let delivered = 0
    const fetching = chunkClient.fetch(server.node.peerId, wants, { onBlock: () => { delivered++ } })
    await waitFor('some blocks', () => delivered >= 5)
    const stoppedAt = Date.now()
    await server.node.stop()
    const result = await fetching
    const elapsed = Date.now() - stoppedAt
    expect(elapsed).toBeLessThan(3000)
    expect(result.delivered + result.failed.length).toBe(100)
    expect(result.failed.length).toBeGreaterThan(0)
    expect(new Set(result.failed.map(f => f.reason))).toEqual(new Set(['disconnected']))
  })

  it('a stalled server fails the outstanding ids after the stall timeout', async () => {
    const { chunks, wants } = makeChunks(5, 1000)
    const { server, chunkClient } = await servePair(mapProvider(chunks, { never: true }), { stallTimeoutMs: 300 })
    const t0 = Date.now()
    const result = await chunkClient.fetch(server.node.peerId, wants, { onBlock: () => {} })
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250)
    expect(Date.now() - t0).toBeLessThan(3000)
    expect(result.failed.map(f => f.reason)).toEqual(['stalled', 'stalled', 'stalled', 'stalled', 'stalled'])
    expect(result.failed[0]?.error?.name).toBe('PeerStalledError')
  })

  it('an aborted fetch resolves with its ids as aborted', async () => {
    const { chunks, wants } = makeChunks(5, 1000)
    const { server, chunkClient } = await servePair(mapProvider(chunks, { never: true }))
    const result = await chunkClient.fetch(server.node.peerId, wants, { onBlock: () => {}, signal: AbortSignal.timeout(200) })
    expect(result.failed.map(f => f.reason)).toEqual(['aborted', 'aborted', 'aborted', 'aborted', 'aborted'])
  })

  it('a client that sends garbage gets ERROR, a reset stream, and a strike', async () => {
    const { server, client } = await servePair(mapProvider(new Map()))
    const stream = await client.node.dialProtocol(server.node.peerId, CHUNKS_PROTOCOL)
    const lp = lpStream(stream)
    await lp.write(Buffer.from([0x92, 0xa4, 0x48, 0x41, 0x56, 0x45, 0x90])) // ['HAVE', []]
    const reply = decodeMessage((await lp.read()).subarray())
    expect(reply).toMatchObject({ type: 'ERROR', code: 'INVALID_REQUEST' })
    await waitFor('strike', () => server.strikes.length === 1)
    expect(server.strikes[0]?.[0]).toBe(client.node.peerId.toString())
    expect(server.stats.get(client.node.peerId.toString()).strikes).toBe(1)
  })

  it('a client exceeding MAX_OUTSTANDING_WANTS gets TOO_MANY_WANTS and a strike', async () => {
    const { server, client, chunkServer } = await servePair(mapProvider(new Map(), { never: true }))
    const stream = await client.node.dialProtocol(server.node.peerId, CHUNKS_PROTOCOL)
    const lp = lpStream(stream)
    const ids = makeChunks(MAX_WANTS_PER_FRAME, 8).wants.map(w => w.id)
    for (let i = 0; i * MAX_WANTS_PER_FRAME <= MAX_OUTSTANDING_WANTS; i++) await lp.write(encodeMessage({ type: 'WANT', ids }))
    const reply = decodeMessage((await lp.read()).subarray())
    expect(reply).toMatchObject({ type: 'ERROR', code: 'TOO_MANY_WANTS' })
    await waitFor('strike', () => server.strikes.length === 1)
    // the provider never answers, yet the stream is released
    await waitFor('stream released', () => chunkServer.activeStreams === 0)
  })

  it('a BLOCK we did not ask for is misbehaviour and fails the session', async () => {
    const liar = await peer()
    const client = await peer()
    allowEachOther(liar, client)
    const bogus = Buffer.from('unasked')
    await liar.node.handle(CHUNKS_PROTOCOL, async (stream) => {
      const lp = lpStream(stream)
      await lp.read()
      await lp.write(encodeMessage({ type: 'BLOCK', id: chunkIdOf(bogus), bytes: bogus }))
    })
    const chunkClient = await started(new ChunkClient({ libp2p: client.node, stats: client.stats, onMisbehaviour: misbehaviour(client) }))
    await connect(client, liar)
    const { wants } = makeChunks(2, 100)
    const delivered: ChunkId[] = []
    const result = await chunkClient.fetch(liar.node.peerId, wants, { onBlock: id => { delivered.push(id) } })
    expect(delivered).toEqual([])
    expect(result.failed.map(f => f.reason)).toEqual(['protocol-error', 'protocol-error'])
    expect(client.strikes.length).toBe(1)
    expect(client.strikes[0]?.[1]).toMatch(/did not ask for/)
  })

  it('moves 100 MiB of 64 KiB chunks between two nodes in one process, every one delivered', async () => {
    const count = 1600 // 100 MiB
    const size = 64 * 1024
    const { chunks, wants } = makeChunks(count, size)
    const { server, chunkClient } = await servePair(mapProvider(chunks))
    await chunkClient.fetch(server.node.peerId, wants.slice(0, 50), { onBlock: () => {} }) // warm up
    const t0 = performance.now()
    const result = await chunkClient.fetch(server.node.peerId, wants, { onBlock: () => {} })
    const seconds = (performance.now() - t0) / 1000
    const mbps = count * size / 1e6 / seconds
    console.log(`chunk fetch throughput: ${count} × 64 KiB in ${seconds.toFixed(2)} s = ${mbps.toFixed(0)} MB/s`)
    // a figure for the log, not a target: speed targets live in scripts/ benchmarks (a shared CI machine
    // under load ran this at 9–40 MB/s)
    expect(result.delivered).toBe(count)
    expect(result.failed).toEqual([])
  })
})

describe('heads and gossip', () => {
  it('requestHeads and broadcastHeads; a bad envelope is skipped and struck', async () => {
    const a = await peer()
    const b = await peer()
    allowEachOther(a, b)
    let bHeads: HeadEntry[] = [{ tree: 'fedora/40', seq: 1, complete: false, envelope: envelopeFor('fedora/40', 1).bytes }]
    const aGot: Array<[PeerId, ReceivedHead[]]> = []
    const heads = await started(new HeadsProtocol({ libp2p: a.node, allowlist: a.allowlist, provider: { heads: async () => [] }, onHeads: (p, h) => aGot.push([p, h]), onMisbehaviour: misbehaviour(a) }, { exchangeOnConnect: false }))
    const bProto = await started(new HeadsProtocol({ libp2p: b.node, allowlist: b.allowlist, provider: { heads: async () => bHeads }, onHeads: () => {} }, { exchangeOnConnect: false }))
    await connect(a, b)
    const got = await heads.requestHeads(b.node.peerId)
    expect(got.map(h => [h.envelope.tree, h.envelope.seq, h.complete])).toEqual([['fedora/40', 1, false]])
    // b finishes the sync and tells everyone; one of its heads is forged (seq does not match its envelope)
    bHeads = [
      { tree: 'fedora/40', seq: 1, complete: true, envelope: envelopeFor('fedora/40', 1).bytes },
      { tree: 'fedora/41', seq: 9, complete: true, envelope: envelopeFor('fedora/41', 2).bytes },
    ]
    await bProto.broadcastHeads()
    await waitFor('broadcast', () => aGot.length === 2)
    expect(aGot[1]?.[0].equals(b.node.peerId)).toBe(true)
    expect(aGot[1]?.[1].map(h => [h.envelope.tree, h.complete])).toEqual([['fedora/40', true]])
    expect(a.strikes.length).toBe(1)
    expect(a.strikes[0]?.[1]).toMatch(/bad head for fedora\/41/)
  })

  it('a gossip announcement reaches a subscribed peer; a forged one is rejected', async () => {
    const a = await peer()
    const b = await peer()
    allowEachOther(a, b)
    const heard: Array<[Envelope, PeerId]> = []
    const announcerA = await started(new Announcer({ libp2p: a.node, pubsub: a.node.services.pubsub, onEnvelope: () => {} }))
    const announcerB = await started(new Announcer({ libp2p: b.node, pubsub: b.node.services.pubsub, onEnvelope: (e, from) => heard.push([e, from]), onMisbehaviour: misbehaviour(b) }))
    // nobody subscribed yet: announce does not throw
    expect(await announcerA.announce(envelopeFor('rhel-10/compose/BaseOS', 1).bytes)).toBe(0)
    announcerB.subscribe('rhel-10/compose/BaseOS')
    await connect(a, b)
    const topic = treeTopic('rhel-10/compose/BaseOS')
    await waitFor('subscription seen', () => a.node.services.pubsub.getSubscribers(topic).some(p => p.equals(b.node.peerId)))
    expect(await announcerA.announce(envelopeFor('rhel-10/compose/BaseOS', 2).bytes)).toBe(1)
    await waitFor('announcement', () => heard.length === 1)
    expect(heard[0]?.[0].seq).toBe(2)
    expect(heard[0]?.[1].equals(a.node.peerId)).toBe(true)
    // status blobs travel on the status topic
    const statusA = await started(new Announcer({ libp2p: a.node, pubsub: a.node.services.pubsub, onEnvelope: () => {}, onStatus: () => {} }))
    const statuses: string[] = []
    await announcerB.stop()
    const statusB = await started(new Announcer({ libp2p: b.node, pubsub: b.node.services.pubsub, onEnvelope: (e, from) => heard.push([e, from]), onStatus: bytes => statuses.push(Buffer.from(bytes).toString()), onMisbehaviour: misbehaviour(b) }))
    statusB.subscribe('rhel-10/compose/BaseOS')
    await waitFor('status subscription seen', () => a.node.services.pubsub.getSubscribers(STATUS_TOPIC).some(p => p.equals(b.node.peerId)))
    await statusA.publishStatus(Buffer.from('site a: all good'))
    await waitFor('status', () => statuses.length === 1)
    expect(statuses).toEqual(['site a: all good'])
    // raw publish of an envelope of another tree on this topic: rejected by b's validator
    await a.node.services.pubsub.publish(topic, envelopeFor('other/tree', 1).bytes)
    await waitFor('strike', () => b.strikes.length === 1)
    expect(heard).toHaveLength(1)
  })
})

describe('haves protocol', () => {
  const tree = 'rhel-10/compose/BaseOS'
  async function site (): Promise<Peer & { haves: HaveService, heard: Array<[string, HaveMessage]> }> {
    const p = await peer()
    const heard: Array<[string, HaveMessage]> = []
    const haves = await started(new HaveService({ libp2p: p.node, allowlist: p.allowlist, stats: p.stats, onHave: (origin, have) => heard.push([origin, have]), onMisbehaviour: misbehaviour(p) }))
    haves.subscribe(tree)
    return { ...p, haves, heard }
  }

  it('a beacon reaches every direct peer; chunk lists only the peers syncing the same version; nothing is relayed', async () => {
    const [a, b, c, origin] = [await site(), await site(), await site(), await site()]
    allowEachOther(a, b, c, origin)
    // a star around a, plus the origin everywhere: b and c are not connected to each other
    await connect(a, b)
    await connect(a, c)
    for (const p of [a, b, c]) await connect(p, origin)
    for (const p of [a, b, c]) p.haves.listen(tree, true) // syncing seq 2; the origin holds it and does not listen
    c.haves.listen(tree, false)
    c.haves.listen(tree, true)
    const ids = [chunkIdOf(Buffer.from('one')), chunkIdOf(Buffer.from('two'))]
    // before anyone beaconed, a's list goes nowhere
    await a.haves.announce(tree, 2, ids)
    await b.haves.announce(tree, 2, []) // b: "I am syncing tree@2"
    await waitFor('b\'s beacon at a', () => a.heard.length === 1)
    await a.haves.announce(tree, 2, ids)
    await waitFor('a\'s list at b', () => b.heard.some(([, h]) => h.ids.length === 2))
    expect(b.heard.map(([from, h]) => [from, h.seq, h.ids.map(toHex)])).toEqual([[a.node.peerId.toString(), 2, ids.map(toHex)]])
    // c never beaconed: a sends it no list; c hears nothing of b (not connected, and a relays nothing)
    await new Promise(resolve => setTimeout(resolve, 300))
    expect(c.heard).toEqual([])
    // the origin was sent b's beacon (beacons go to every peer) but acts on nothing: it is not listening
    expect(origin.heard).toEqual([])
    // a list for another version is not sent to a peer syncing this one
    await a.haves.announce(tree, 3, ids)
    await new Promise(resolve => setTimeout(resolve, 300))
    expect(b.heard.filter(([, h]) => h.seq === 3)).toEqual([])
  })

  it('a malformed or foreign frame on the haves stream strikes the sender and ends the stream', async () => {
    const [a, b] = [await site(), await site()]
    allowEachOther(a, b)
    await connect(a, b)
    b.haves.listen(tree, true)
    const lp = lpStream(await a.node.dialProtocol(b.node.peerId, HAVES_PROTOCOL))
    await lp.write(encodeMessage({ type: 'WANT', ids: [chunkIdOf(Buffer.from('x'))] }))
    await waitFor('the strike', () => b.strikes.length === 1)
    expect(b.strikes[0]![1]).toMatch(/unexpected WANT/)
    const lp2 = lpStream(await a.node.dialProtocol(b.node.peerId, HAVES_PROTOCOL))
    await lp2.write(Buffer.concat([Buffer.from([0x05]), Buffer.from('junk!')]))
    await waitFor('the second strike', () => b.strikes.length === 2)
    expect(b.heard).toEqual([])
  })
})
