import { generateKeyPairSync } from 'node:crypto'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { chunkIdOf, toHex } from '../../protocol/chunk-id.js'
import { rawPublicKeyOf, signEnvelope, type Envelope, type EnvelopeFields } from '../../protocol/envelope.js'
import { encodeRoot, ManifestWriter } from '../../protocol/manifest.js'
import { loadPublisherKey } from '../../agent/core/identity.js'
import { cliOk, sleep, waitFor } from '../../agent/demo/local-cluster.js'
import type { AgentStatus } from '../../agent/api/api.js'
import { RoguePeer } from '../helpers/rogue-peer.js'
import { describeTree, generateTree, mutateTree, type TreeSpec } from '../../agent/demo/tree-gen.js'
import { treeCommands } from '../helpers/tree-commands.js'
import { clusterPerTest } from '../helpers/cluster.js'

// Real agents (separate processes on 127.0.0.1) facing a hostile peer: a stranger that is not on the
// allowlist, a relay that forges and replays envelopes, and a listed peer that serves wrong bytes.

const TREE = 'lab/compose/BaseOS'
const { subscribe, publish, syncDone } = treeCommands(TREE)
const SMALL: TreeSpec = { seed: 'hostile', files: 60, largeBytes: 2 * 1024 * 1024, largeFiles: 1, smallMax: 32 * 1024 }

let rogue: RoguePeer | undefined
const clusters = clusterPerTest({
  teardown: async () => {
    await rogue?.stop()
    rogue = undefined
  },
})

function peerOf (status: AgentStatus, peerId: string): AgentStatus['peers'][number] | undefined {
  return status.peers.find(p => p.peerId === peerId)
}

describe('hostile peers (real agents)', () => {
  it('a foreign agent dialling in receives 0 bytes of tree data: no heads, no chunks, no connection', async () => {
    const cluster = await clusters.create('deltamesh-hostile-')
    const source = join(cluster.dir, 'source')
    await generateTree(source, SMALL)
    const origin = await cluster.addSite('origin')
    const foreign = await cluster.addSite('foreign')
    // the foreign site does everything right on its side (lists, trusts, subscribes); the origin never listed it
    await cliOk(['peers', 'add', '--home', foreign.home, '--name', 'origin', origin.multiaddr])
    await cliOk(['trust', '--home', foreign.home, TREE, origin.publisherKey])
    await cluster.start(origin)
    await cluster.start(foreign)
    await subscribe(cluster, foreign)
    await publish(origin, source)
    // and a hand-driven libp2p node that is not listed either
    rogue = await RoguePeer.start([TREE])
    rogue.allow(origin.peerId)
    expect(await rogue.canConnect(origin.multiaddr)).toBe(false)
    await sleep(4000) // the foreign dialer retries at 1 s and 2 s meanwhile

    const f = await cluster.status(foreign)
    expect(peerOf(f, origin.peerId)?.connected).toBe(false)
    expect(f.counters.bytesDown).toBe(0)
    expect(f.counters.chunkBytesDown).toBe(0)
    const tree = f.trees.find(t => t.name === TREE)
    expect(tree?.newestSeq).toBeUndefined() // not even the envelope (heads) reached it
    expect(tree?.currentSeq).toBeUndefined()
    const o = await cluster.status(origin)
    expect(o.peers.filter(p => p.connected)).toEqual([])
    expect(o.counters.bytesUp).toBe(0)
    expect(rogue.envelopes.size).toBe(0)
    expect(rogue.chunksServed).toBe(0)
  })

  it('forged, replayed, rolled-back, misdirected and malformed versions are refused, logged and counted per reason', async () => {
    const cluster = await clusters.create('deltamesh-hostile-')
    const source = join(cluster.dir, 'source')
    await generateTree(source, SMALL)
    const origin = await cluster.addSite('origin')
    const sub = await cluster.addSite('sub')
    await cluster.wire(TREE, origin)
    await cluster.start(origin)
    await cluster.start(sub)
    const mirror = await subscribe(cluster, sub)
    // a listed peer that relays what it hears and then turns forger
    rogue = await RoguePeer.start([TREE])
    rogue.allow(origin.peerId)
    rogue.allow(sub.peerId)
    for (const s of [origin, sub]) await cliOk(['peers', 'add', '--home', s.home, '--name', 'rogue', rogue.multiaddr])
    await waitFor('rogue connected and on the topic', async () => rogue!.hearsTopic(TREE, sub.peerId) && rogue!.connectedTo(origin.peerId), 20_000)

    await syncDone(sub, await publish(origin, source))
    await mutateTree(source, 'hostile-v2')
    const seq2 = await publish(origin, source)
    await syncDone(sub, seq2)
    const v2 = await describeTree(source)
    await waitFor('rogue heard v1 and v2', async () => rogue!.heard.filter(e => e.tree === TREE).length >= 2, 10_000)
    const [v1env, v2env] = rogue.heard.filter(e => e.tree === TREE) as [Envelope, Envelope]
    const publisherKey = await loadPublisherKey(join(origin.home, 'identity', 'publisher.pem'))
    const fields = (e: Envelope): EnvelopeFields => ({ tree: e.tree, seq: e.seq, label: e.label, createdAtMs: e.createdAtMs, rootHash: e.rootHash, rootSize: e.rootSize, publisherKey: e.publisherKey })
    const otherRoot = chunkIdOf(Buffer.from('not the real root'))
    const stranger = generateKeyPairSync('ed25519').privateKey

    // replay: the genuine v1 envelope, again
    await rogue.gossip(TREE, v1env.bytes)
    // rollback: the publisher's key on seq 1 with a root nobody ever saw (what a stolen old key could do)
    await rogue.gossip(TREE, signEnvelope({ ...fields(v1env), rootHash: otherRoot }, publisherKey).bytes)
    // equivocation: a second, different seq 2
    await rogue.gossip(TREE, signEnvelope({ ...fields(v2env), rootHash: otherRoot }, publisherKey).bytes)
    // forged signature: seq 3, the signature's last byte flipped
    const forged = Buffer.from(signEnvelope({ ...fields(v2env), seq: 3 }, publisherKey).bytes)
    forged[forged.length - 1] = (forged[forged.length - 1] as number) ^ 0x01
    await rogue.gossip(TREE, forged)
    // another tree's envelope (properly signed) on this tree's topic
    const otherTree = signEnvelope({ ...fields(v2env), tree: 'other/tree', seq: 50 }, publisherKey)
    await rogue.gossip(TREE, otherTree.bytes)
    // a key nobody trusts for this tree
    await rogue.gossip(TREE, signEnvelope({ ...fields(v2env), seq: 99, publisherKey: rawPublicKeyOf(stranger) }, stranger).bytes)
    // the same through the heads exchange: a forged signature and a head whose envelope is another tree's
    await rogue.pushHeads([{ tree: TREE, seq: 3, complete: true, envelope: forged }, { tree: 'lab/other', seq: 50, complete: true, envelope: otherTree.bytes }])

    // a version properly signed whose manifest disagrees with its root (entry count): nothing may be installed
    const writer = new ManifestWriter({ chunking: { algorithm: 'gear', avgBits: 15, minSize: 16384, maxSize: 262144 } })
    const manifest = Buffer.concat([writer.start(), writer.write({ type: 'dir', path: 'evil', mode: 0o755, mtimeMs: 0 })])
    const badRoot = encodeRoot({ manifestSize: manifest.length, entryCount: 7, totalFileBytes: 0, chunks: [{ id: chunkIdOf(manifest), size: manifest.length }] })
    // and one whose manifest chunk is served with bytes that do not hash to the id the root lists
    const root4 = encodeRoot({ manifestSize: manifest.length, entryCount: 1, totalFileBytes: 0, chunks: [{ id: chunkIdOf(Buffer.from('a manifest chunk the rogue cannot produce')), size: manifest.length }] })
    const blobs = new Map([[toHex(chunkIdOf(badRoot)), badRoot], [toHex(chunkIdOf(manifest)), manifest], [toHex(chunkIdOf(root4)), root4]])
    rogue.provider = async id => blobs.get(toHex(id)) ?? manifest // manifest bytes under any other id: a lie
    const env3 = signEnvelope({ ...fields(v2env), seq: 3, rootHash: chunkIdOf(badRoot), rootSize: badRoot.length }, publisherKey)
    await rogue.pushHeads([{ tree: TREE, seq: 3, complete: true, envelope: env3.bytes }])
    await waitFor('the bad manifest to be refused', async () => ((await cluster.status(sub)).envelopeRejections?.['bad-manifest'] ?? 0) >= 1, 20_000)
    const env4 = signEnvelope({ ...fields(v2env), seq: 4, rootHash: chunkIdOf(root4), rootSize: root4.length }, publisherKey)
    await rogue.pushHeads([{ tree: TREE, seq: 4, complete: true, envelope: env4.bytes }])
    await waitFor('the bad manifest chunk to be refused', async () => (await cluster.status(sub)).counters.chunksRejected >= 1, 20_000)

    const expected = { replay: 1, rollback: 1, equivocation: 1, 'bad-signature': 2, 'wrong-tree': 2, 'untrusted-key': 1, 'bad-manifest': 1 }
    let status: AgentStatus | undefined
    await waitFor('every rejection counted', async () => {
      status = await cluster.status(sub)
      return Object.entries(expected).every(([reason, n]) => (status!.envelopeRejections?.[reason] ?? 0) >= n)
    }, 15_000).catch(() => { throw new Error(`counted: ${JSON.stringify(status?.envelopeRejections)}`) })
    expect(status!.counters.envelopesRejected).toBe(Object.values(status!.envelopeRejections ?? {}).reduce((a, b) => a + b, 0))
    // one clear log line per refusal, naming the reason
    for (const reason of Object.keys(expected)) expect(sub.log, `log line for ${reason}`).toMatch(new RegExp(`"reason":"${reason}".*"msg":"rejected version`))
    // nothing of it reached the mirror: still exactly v2, and v2 is still what the tree says is current
    expect(await describeTree(mirror)).toEqual(v2)
    expect(status!.trees.find(t => t.name === TREE)?.currentSeq).toBe(seq2)
    // the bytes that did not hash were never stored: the installed version still verifies
    expect(await cliOk(['verify', '--home', sub.home, TREE, '--seq', String(seq2)])).toMatch(/0 problem/)
  })

  it('a lying peer among honest ones: the sync completes byte-identical, the liar is scored down, banned, refused while banned, and let back after', async () => {
    const cluster = await clusters.create('deltamesh-hostile-')
    const source = join(cluster.dir, 'source')
    await generateTree(source, { seed: 'liar', files: 120, largeBytes: 8 * 1024 * 1024, largeFiles: 2, smallMax: 64 * 1024 })
    const origin = await cluster.addSite('origin')
    const honest = await cluster.addSite('honest')
    const victim = await cluster.addSite('victim')
    await cluster.wire(TREE, origin)
    await cluster.editConfig(origin, { limits: { up: '6MB/s' } }) // long enough a sync for the liar to take part
    await cluster.editConfig(victim, { agent: { banSeconds: 20 } })
    for (const s of cluster.sites) await cluster.start(s)
    rogue = await RoguePeer.start([TREE])
    for (const s of cluster.sites) {
      rogue.allow(s.peerId)
      await cliOk(['peers', 'add', '--home', s.home, '--name', 'liar', rogue.multiaddr])
    }
    await waitFor('liar connected to everyone', async () => cluster.sites.every(s => rogue!.connectedTo(s.peerId)), 20_000)
    const mirrors = [await subscribe(cluster, honest), await subscribe(cluster, victim)]
    const seq = await publish(origin, source)
    // the liar claims the version the moment it hears of it
    await waitFor('liar heard the version', async () => rogue!.envelopes.get(TREE)?.seq === seq, 10_000, 20)
    await rogue.advertise()
    let atBan: AgentStatus | undefined
    await waitFor('the victim to ban the liar', async () => {
      atBan = await cluster.status(victim)
      return (peerOf(atBan, rogue!.peerId)?.bannedUntilMs ?? 0) > Date.now()
    }, 30_000, 100)
    const liar = peerOf(atBan!, rogue.peerId)
    const bannedUntil = liar?.bannedUntilMs as number
    // scored down: each wrong chunk counted and struck until the budget ran out
    expect(liar?.badChunks).toBeGreaterThanOrEqual(1)
    expect(liar?.strikes).toBeGreaterThanOrEqual(16)
    expect(atBan!.counters.chunksRejected).toBeGreaterThanOrEqual(liar!.badChunks)

    // while banned: the gater refuses it, and the victim does not redial (its dialer would retry within 1 s)
    expect(await rogue.canConnect(victim.multiaddr)).toBe(false)
    // a restart (mid-sync) does not forgive it: the ban is kept in the agent's database
    await cluster.stop(victim)
    await cluster.start(victim)
    expect(peerOf(await cluster.status(victim), rogue.peerId)?.bannedUntilMs).toBe(bannedUntil)
    await sleep(2000)
    expect(rogue.connectedTo(victim.peerId)).toBe(false)
    expect(await rogue.canConnect(victim.multiaddr)).toBe(false)

    await Promise.all([syncDone(honest, seq), syncDone(victim, seq)])
    const want = await describeTree(source)
    for (const m of mirrors) expect(await describeTree(m)).toEqual(want)
    expect(rogue.chunksServed).toBeGreaterThan(0) // it was asked, and lied

    expect(peerOf(await cluster.status(victim), rogue.peerId)?.connected).toBe(false)
    expect(victim.log).toMatch(/"reason":"Chunk hash mismatch[^"]*","msg":"peer exceeded its misbehaviour budget; disconnected and banned"/)
    // the ban expires (20 s here, 10 min by default): the victim's dialer brings the peer back
    if (Date.now() < bannedUntil) expect(rogue.connectedTo(victim.peerId)).toBe(false)
    await waitFor('the victim to redial after the ban', async () => rogue!.connectedTo(victim.peerId), bannedUntil - Date.now() + 20_000)
    expect(Date.now()).toBeGreaterThanOrEqual(bannedUntil - 1000)
    expect(await cliOk(['verify', '--home', victim.home, TREE])).toMatch(/0 problem/)
  })
})
