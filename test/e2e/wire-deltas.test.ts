import { cp, mkdir, readFile, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { cliOk, waitFor, type Site } from '../../agent/demo/local-cluster.js'
import type { AgentStatus } from '../../agent/api/api.js'
import { RoguePeer } from '../helpers/rogue-peer.js'
import { describeTree, prng } from '../../agent/demo/tree-gen.js'
import { clusterPerTest, chunkSet } from '../helpers/cluster.js'

// Real agents on 127.0.0.1: a source-like tree (text files) published as a fresh directory per version, as
// a checkout at a new tag would be. Compressed batches and publisher-computed deltas carry v1 → v2 in far
// fewer bytes than the chunks v2 lacks; a subscriber two versions behind gets a correct tree (plain chunks);
// a delta that does not rebuild its target is rejected and that file comes as plain chunks.

const TREE = 'src/project'
let rogue: RoguePeer | undefined
const clusters = clusterPerTest({
  teardown: async () => {
    await rogue?.stop()
    rogue = undefined
  },
})

const WORDS = ['static', 'int', 'return', 'struct', 'buffer', 'length', 'if', 'else', 'for', 'while', 'const', 'char', 'void', 'size_t', 'error', 'goto', 'out', 'free', 'malloc', 'memcpy']

function sourceFile (seed: string, lines: number): string {
  const rand = prng(seed)
  const out: string[] = []
  for (let i = 0; i < lines; i++) {
    const n = 2 + Math.floor(rand() * 8)
    out.push('\t'.repeat(Math.floor(rand() * 3)) + Array.from({ length: n }, () => WORDS[Math.floor(rand() * WORDS.length)]).join(' ') + (rand() < 0.5 ? ';' : ` /* ${Math.floor(rand() * 1e6)} */`))
  }
  return out.join('\n') + '\n'
}

async function writeTree (root: string, files: number): Promise<void> {
  for (let i = 0; i < files; i++) {
    const path = join(root, `src/mod${i % 7}/file${i}.c`)
    await mkdir(dirname(path), { recursive: true })
    await writeFile(path, sourceFile(`file${i}`, 200 + (i * 37) % 1500))
  }
}

/** The next tag: a copy with a few lines changed in `count` files (new files, new inodes, like a checkout). */
async function nextTag (from: string, to: string, seed: string, count: number, files: number): Promise<void> {
  await cp(from, to, { recursive: true })
  const rand = prng(seed)
  for (let k = 0; k < count; k++) {
    const i = Math.floor(rand() * files)
    const path = join(to, `src/mod${i % 7}/file${i}.c`)
    const lines = (await readFile(path, 'utf8')).split('\n')
    const at = Math.floor(rand() * lines.length)
    lines.splice(at, 1, `\t/* ${seed}: fixed */`, 'if (length > size) goto out;')
    // `to` is a fresh copy, so the previous tag's files (the publisher's delta bases) stay intact
    await writeFile(path, lines.join('\n'))
  }
}

async function publish (site: Site, source: string): Promise<number> {
  return (JSON.parse(await cliOk(['publish', '--home', site.home, TREE, source, '--json'])) as { seq: number }).seq
}
async function syncDone (site: Site, seq: number): Promise<void> {
  await cliOk(['sync', '--home', site.home, TREE, '--seq', String(seq), '--timeout', '120'], { timeoutMs: 130_000 })
}

describe('wire efficiency on a source-like tree (real agents)', () => {
  it('v1 → v2 travels as deltas and compressed batches; a subscriber two versions behind gets a correct tree', async () => {
    const cluster = await clusters.create()
    const FILES = 240
    const v1 = join(cluster.dir, 'v1')
    const v2 = join(cluster.dir, 'v2')
    const v3 = join(cluster.dir, 'v3')
    await writeTree(v1, FILES)
    await nextTag(v1, v2, 'tag2', 30, FILES)
    await nextTag(v2, v3, 'tag3', 30, FILES)
    const origin = await cluster.addSite('origin')
    const a = await cluster.addSite('a')
    const behind = await cluster.addSite('behind')
    await cluster.wire(TREE, origin)
    for (const s of cluster.sites) await cluster.start(s)
    const mirrorA = join(cluster.dir, 'a-mirror')
    const mirrorBehind = join(cluster.dir, 'behind-mirror')
    await cliOk(['subscribe', '--home', a.home, TREE, '--to', mirrorA])
    await cliOk(['subscribe', '--home', behind.home, TREE, '--to', mirrorBehind])

    const seq1 = await publish(origin, v1)
    await Promise.all([syncDone(a, seq1), syncDone(behind, seq1)])
    expect(await describeTree(mirrorA)).toEqual(await describeTree(v1))
    // the first sync has no previous version: compressed batches alone
    await cluster.stop(behind)

    const before: AgentStatus = await cluster.status(a)
    const seq2 = await publish(origin, v2)
    await syncDone(a, seq2)
    expect(await describeTree(mirrorA)).toEqual(await describeTree(v2))
    const after = await cluster.status(a)
    const had = await chunkSet(v1)
    let lacked = 0
    for (const [id, size] of await chunkSet(v2)) if (!had.has(id)) lacked += size
    const down = after.counters.bytesDown - before.counters.bytesDown
    process.stdout.write(`v1 → v2: lacked ${lacked} B of chunks, received ${down} B in frames\n`)
    expect(lacked).toBeGreaterThan(200_000)
    // deltas of a few changed lines, plus the new manifest chunks: a small fraction of the lacking chunks
    expect(down).toBeLessThan(lacked / 4)
    expect(origin.log).toMatch(/deltas computed/)
    expect(a.log).toMatch(/"applied":[1-9]/)

    const seq3 = await publish(origin, v3)
    await syncDone(a, seq3)
    expect(await describeTree(mirrorA)).toEqual(await describeTree(v3))
    // two versions behind: no v1 → v3 delta exists, so its changed files come as plain (compressed) chunks
    await cluster.start(behind)
    await syncDone(behind, seq3)
    expect(await describeTree(mirrorBehind)).toEqual(await describeTree(v3))
  }, 240_000)

  it('a delta that does not rebuild its target (file or manifest chunk) is rejected, the peer struck, the chunks fetched plainly', async () => {
    const cluster = await clusters.create()
    const FILES = 60
    const v1 = join(cluster.dir, 'v1')
    const v2 = join(cluster.dir, 'v2')
    await writeTree(v1, FILES)
    await nextTag(v1, v2, 'tag2', 8, FILES)
    const origin = await cluster.addSite('origin')
    const a = await cluster.addSite('a')
    // the subscriber's only peer is a listed relay that serves chunks honestly and lies in one delta
    rogue = await RoguePeer.start([TREE])
    rogue.provider = rogue.relayProvider()
    // the first key a subscriber asks for is its one new manifest chunk (60 entries), the next ones its changed files
    rogue.deltaProvider = rogue.lyingDeltaProvider([0, 1])
    rogue.allow(origin.peerId)
    rogue.allow(a.peerId)
    await cliOk(['peers', 'add', '--home', origin.home, '--name', 'relay', rogue.multiaddr])
    await cliOk(['peers', 'add', '--home', a.home, '--name', 'relay', rogue.multiaddr])
    await cliOk(['trust', '--home', a.home, TREE, origin.publisherKey])
    await cluster.start(origin)
    await cluster.start(a)
    const mirror = join(cluster.dir, 'a-mirror')
    await cliOk(['subscribe', '--home', a.home, TREE, '--to', mirror])
    const relay = rogue
    const claim = async (seq: number): Promise<void> => {
      await waitFor('the relay to hear the version', async () => relay.envelopes.get(TREE)?.seq === seq, 30_000, 50)
      await relay.advertise()
    }

    const seq1 = await publish(origin, v1)
    await claim(seq1)
    await syncDone(a, seq1)
    expect(await describeTree(mirror)).toEqual(await describeTree(v1))

    const seq2 = await publish(origin, v2)
    await claim(seq2)
    await syncDone(a, seq2)
    expect(await describeTree(mirror)).toEqual(await describeTree(v2))
    expect(a.log).toMatch(/manifest delta rejected; the chunk is fetched plainly/)
    expect(a.log).toMatch(/"applied":0,"rejected":1,.*"msg":"manifest deltas"/)
    expect(a.log).toMatch(/delta rejected; its chunks are fetched plainly/)
    // one of the changed files came by a lying delta (rejected, fetched plainly), the others by honest ones
    expect(a.log).toMatch(/"applied":[1-9][0-9]*,"rejected":1,.*"msg":"deltas"/)
    expect(rogue.deltasServed).toBeGreaterThanOrEqual(2)
    const status = await cluster.status(a)
    expect(status.peers.find(p => p.peerId === relay.peerId)?.strikes ?? 0).toBeGreaterThan(0)
  }, 240_000)
})
