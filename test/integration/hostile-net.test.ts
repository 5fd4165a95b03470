import { afterEach, describe, expect, it } from 'vitest'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { lpStream } from '@libp2p/utils'
import { chunkIdOf } from '../../protocol/chunk-id.js'
import { CHUNKS_PROTOCOL, DELTAS_PROTOCOL, DELTAS_PROTOCOL_2 } from '../../protocol/ids.js'
import { decodeMessage, encodeMessage } from '../../protocol/messages.js'
import { MAX_OUTSTANDING_WANTS, MAX_WANTS_PER_FRAME } from '../../protocol/wire-limits.js'
import { createNode, PeerAllowlist, type DeltameshNode } from '../../agent/net/node.js'
import { ChunkServer } from '../../agent/net/chunk-server.js'
import { DeltaService } from '../../agent/net/delta-protocol.js'
import { toHex } from '../../protocol/chunk-id.js'
import { Dialer } from '../../agent/net/dialer.js'
import { DEFAULT_MAX_STRIKES, PeerStats } from '../../agent/net/peer-stats.js'
import { banOnBudgetExceeded, PeerBans } from '../../agent/net/bans.js'

// Real libp2p nodes on 127.0.0.1 wired with the agent's ban policy: strikes → ban → hang up; the gater
// refuses a banned peer both ways; the dialer waits for the ban to end.

const stops: Array<() => Promise<void>> = []
afterEach(async () => { for (const s of stops.splice(0).reverse()) await s() })

interface Guarded { node: DeltameshNode, allowlist: PeerAllowlist, stats: PeerStats, bans: PeerBans, banned: string[] }

async function guardedNode (banMs = 60_000): Promise<Guarded> {
  const allowlist = new PeerAllowlist()
  const bans = new PeerBans({ banMs })
  const node = await createNode({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'], allowlist, bans })
  stops.push(async () => { await node.stop() })
  const banned: string[] = []
  const stats: PeerStats = new PeerStats({ onBudgetExceeded: banOnBudgetExceeded({ libp2p: node, get stats () { return stats }, bans, onBanned: peer => banned.push(peer) }) })
  return { node, allowlist, stats, bans, banned }
}

async function waitFor (what: string, check: () => boolean, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 20))
  }
}

describe('protocol versions', () => {
  it('a protocol version we do not speak is refused at negotiation, before any frame is read', async () => {
    const server = await guardedNode()
    const client = await guardedNode()
    server.allowlist.add(client.node.peerId)
    client.allowlist.add(server.node.peerId)
    const chunkServer = new ChunkServer({ libp2p: server.node, provider: { read: async () => undefined }, allowlist: server.allowlist })
    await chunkServer.start()
    stops.push(async () => { await chunkServer.stop() })
    await client.node.dial(server.node.getMultiaddrs()[0]!)
    for (const proto of ['/deltamesh/chunks/2.0.0', '/deltamesh/chunks/0.9.0', '/deltamesh/chunks/1.0.0/extra']) {
      await expect(client.node.dialProtocol(server.node.peerId, proto, { signal: AbortSignal.timeout(3000) })).rejects.toHaveProperty('name', 'UnsupportedProtocolError')
    }
    // the current one is served on the same connection
    await expect(client.node.dialProtocol(server.node.peerId, CHUNKS_PROTOCOL)).resolves.toBeDefined()
  })
})

describe('bans', () => {
  it('a peer flooding WANTs is refused stream by stream, struck, then banned and cut off; the server stays bounded', async () => {
    const server = await guardedNode()
    const flooder = await guardedNode()
    server.allowlist.add(flooder.node.peerId)
    flooder.allowlist.add(server.node.peerId)
    // a provider that never answers: every WANT stays outstanding, the worst case for the server's queue
    const chunkServer = new ChunkServer({ libp2p: server.node, provider: { read: async () => await new Promise<never>(() => {}) }, allowlist: server.allowlist, stats: server.stats, onMisbehaviour: server.stats.misbehaviourHandler() })
    await chunkServer.start()
    stops.push(async () => { await chunkServer.stop() })
    await flooder.node.dial(server.node.getMultiaddrs()[0]!)
    const ids = Array.from({ length: MAX_WANTS_PER_FRAME }, (_, i) => chunkIdOf(Buffer.from(`flood ${i}`)))
    const frame = encodeMessage({ type: 'WANT', ids })
    const heapBefore = process.memoryUsage().heapUsed
    let refusals = 0
    let cutOff = false
    for (let round = 0; round < DEFAULT_MAX_STRIKES + 4 && !cutOff; round++) {
      let stream
      try {
        stream = await flooder.node.dialProtocol(server.node.peerId, CHUNKS_PROTOCOL, { signal: AbortSignal.timeout(2000) })
      } catch {
        cutOff = true
        break
      }
      const lp = lpStream(stream)
      try {
        // one frame more than the server may hold unanswered
        for (let i = 0; i * MAX_WANTS_PER_FRAME <= MAX_OUTSTANDING_WANTS; i++) await lp.write(frame)
        const reply = decodeMessage((await lp.read({ signal: AbortSignal.timeout(2000) })).subarray())
        if (reply.type === 'ERROR' && reply.code === 'TOO_MANY_WANTS') refusals++
      } catch {
        // the server reset the stream: also a refusal, not an answer
      }
    }
    const flooderId = flooder.node.peerId.toString()
    expect(refusals).toBeGreaterThanOrEqual(DEFAULT_MAX_STRIKES - 1)
    expect(server.stats.get(flooderId).strikes).toBeGreaterThanOrEqual(DEFAULT_MAX_STRIKES)
    expect(server.banned).toEqual([flooderId])
    await waitFor('the flooder to be cut off', () => server.node.getConnections(flooder.node.peerId).length === 0)
    await waitFor('every flooded stream released', () => chunkServer.activeStreams === 0)
    // and it cannot come back while banned
    await expect(flooder.node.dial(server.node.getMultiaddrs()[0]!, { signal: AbortSignal.timeout(2000) }).then(async () => {
      await new Promise(resolve => setTimeout(resolve, 300))
      if (server.node.getConnections(flooder.node.peerId).length === 0) throw new Error('dropped by the gater')
    })).rejects.toThrow()
    // ~17 × 4096 queued ids were refused, not held: the heap did not grow by anything like their size
    expect(process.memoryUsage().heapUsed - heapBefore).toBeLessThan(64 * 1024 * 1024)
  })

  it('the gater refuses a banned peer both ways and the dialer redials it only once the ban is over', async () => {
    const a = await guardedNode(1500)
    const b = await guardedNode()
    a.allowlist.add(b.node.peerId)
    b.allowlist.add(a.node.peerId)
    const dialer = new Dialer({ libp2p: a.node }, { peers: [b.node.getMultiaddrs()[0]!], backoffsMs: [50, 100], jitter: 0, bannedUntil: p => a.bans.bannedUntil(p) })
    await dialer.start()
    stops.push(async () => { await dialer.stop() })
    await waitFor('connected', () => a.node.getConnections(b.node.peerId).length > 0)

    const bId = b.node.peerId.toString()
    for (let i = 0; i < DEFAULT_MAX_STRIKES; i++) a.stats.strike(bId, 'test: bad chunk')
    const bannedAt = Date.now()
    expect(a.banned).toEqual([bId])
    expect(a.bans.bannedUntil(bId)).toBeGreaterThan(bannedAt + 1000)
    await waitFor('hung up', () => a.node.getConnections(b.node.peerId).length === 0)
    // b tries to come back at once; a's gater refuses, and a's dialer (backoff 50 ms) does not redial
    await b.node.dial(a.node.getMultiaddrs()[0]!).catch(() => undefined)
    await new Promise(resolve => setTimeout(resolve, 600))
    expect(a.node.getConnections(b.node.peerId)).toEqual([])
    await expect(a.node.dial(b.node.getMultiaddrs()[0]!)).rejects.toThrow()
    // after the ban a's dialer reconnects on its own
    await waitFor('redial after the ban', () => a.node.getConnections(b.node.peerId).length > 0, 5000)
    expect(Date.now() - bannedAt).toBeGreaterThanOrEqual(1400)
    // a second ban lasts twice as long
    for (let i = 0; i < DEFAULT_MAX_STRIKES; i++) a.stats.strike(bId, 'test: again')
    expect(a.bans.snapshot()[bId]?.count).toBe(2)
    expect((a.bans.bannedUntil(bId) ?? 0) - Date.now()).toBeGreaterThan(2500)
  })
})

describe('deltas protocol', () => {
  async function pair (): Promise<{ server: Guarded, client: Guarded }> {
    const server = await guardedNode()
    const client = await guardedNode()
    server.allowlist.add(client.node.peerId)
    client.allowlist.add(server.node.peerId)
    await client.node.dial(server.node.getMultiaddrs()[0]!)
    return { server, client }
  }
  const keys = Array.from({ length: 9 }, (_, i) => chunkIdOf(Buffer.from(`delta key ${i}`)))
  const held = new Map([[toHex(keys[2]!), Buffer.from('delta two')], [toHex(keys[3]!), Buffer.from('delta three')], [toHex(keys[7]!), Buffer.from('delta seven')]])
  const provider = { getMany: async (asked: Uint8Array[]) => asked.map(key => held.get(toHex(key))) }

  it('2.0.0 answers a run of misses with one DELTA_NONE; a 1.0.0 client still gets a DONT_HAVE per key', async () => {
    const { server, client } = await pair()
    const service = new DeltaService({ libp2p: server.node, provider, allowlist: server.allowlist })
    await service.start()
    stops.push(async () => { await service.stop() })

    const replies = async (protocol: string): Promise<string[]> => {
      const lp = lpStream(await client.node.dialProtocol(server.node.peerId, protocol))
      await lp.write(encodeMessage({ type: 'DELTA_WANT', keys }))
      const out: string[] = []
      let answered = 0
      while (answered < keys.length) {
        const msg = decodeMessage((await lp.read({ signal: AbortSignal.timeout(3000) })).subarray())
        out.push(msg.type === 'DELTA_NONE' ? `none ${msg.count}` : msg.type)
        answered += msg.type === 'DELTA_NONE' ? msg.count : 1
      }
      return out
    }
    expect(await replies(DELTAS_PROTOCOL_2)).toEqual(['none 2', 'DELTA', 'DELTA', 'none 3', 'DELTA', 'none 1'])
    expect(await replies(DELTAS_PROTOCOL)).toEqual(['DONT_HAVE', 'DONT_HAVE', 'DELTA', 'DELTA', 'DONT_HAVE', 'DONT_HAVE', 'DONT_HAVE', 'DELTA', 'DONT_HAVE'])
    const fetcher = new DeltaService({ libp2p: client.node, provider: { getMany: async (asked: Uint8Array[]) => asked.map(() => undefined) }, allowlist: client.allowlist })
    const got = await fetcher.fetch(server.node.peerId, keys)
    expect([...got.keys()].sort()).toEqual([...held.keys()].sort())
  })

  it('answers hundreds of keys in order, with runs of misses across lookup batches as one DELTA_NONE each', async () => {
    const { server, client } = await pair()
    const many = Array.from({ length: 300 }, (_, i) => chunkIdOf(Buffer.from(`many ${i}`)))
    const holds = (i: number): boolean => i % 7 === 3 || (i >= 40 && i < 70) || i === 299
    const stored = new Map(many.flatMap((k, i) => holds(i) ? [[toHex(k), Buffer.alloc(100 + i, i)] as const] : []))
    const lookups: number[] = []
    const service = new DeltaService({ libp2p: server.node, provider: { getMany: async (asked: Uint8Array[]) => { lookups.push(asked.length); return asked.map(key => stored.get(toHex(key))) } }, allowlist: server.allowlist })
    await service.start()
    stops.push(async () => { await service.stop() })

    const lp = lpStream(await client.node.dialProtocol(server.node.peerId, DELTAS_PROTOCOL_2))
    await lp.write(encodeMessage({ type: 'DELTA_WANT', keys: many }))
    const got: string[] = []
    for (let answered = 0; answered < many.length;) {
      const msg = decodeMessage((await lp.read({ signal: AbortSignal.timeout(3000) })).subarray())
      got.push(msg.type === 'DELTA_NONE' ? `none ${msg.count}` : msg.type === 'DELTA' ? `delta ${toHex(msg.key) === toHex(many[answered]!) ? 'in order' : 'OUT OF ORDER'} ${msg.bytes.byteLength}` : msg.type)
      answered += msg.type === 'DELTA_NONE' ? msg.count : 1
    }
    const expected: string[] = []
    let run = 0
    for (let i = 0; i < many.length; i++) {
      if (!holds(i)) { run++; continue }
      if (run > 0) { expected.push(`none ${run}`); run = 0 }
      expected.push(`delta in order ${100 + i}`)
    }
    expect(got).toEqual(expected)
    expect(Math.max(...lookups)).toBeLessThanOrEqual(16)
    expect(lookups.reduce((a, b) => a + b, 0)).toBe(300)
  })

  it('a DELTA_NONE covering more keys than were asked is a violation: the fetch fails and the sender is struck', async () => {
    const { server, client } = await pair()
    await server.node.handle(DELTAS_PROTOCOL_2, async (stream) => {
      const lp = lpStream(stream)
      const want = decodeMessage((await lp.read()).subarray())
      if (want.type !== 'DELTA_WANT') throw new Error('expected DELTA_WANT')
      await lp.write(encodeMessage({ type: 'DELTA_NONE', count: want.keys.length + 1 }))
    })
    const fetcher = new DeltaService({ libp2p: client.node, provider: { getMany: async (asked: Uint8Array[]) => asked.map(() => undefined) }, allowlist: client.allowlist, stats: client.stats, onMisbehaviour: client.stats.misbehaviourHandler() })
    await expect(fetcher.fetch(server.node.peerId, keys)).rejects.toThrow(/DELTA_NONE for 10 keys, 9 unanswered/)
    expect(client.stats.get(server.node.peerId.toString()).strikes).toBe(1)
  })
})
