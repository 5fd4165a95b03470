import { randomBytes } from 'node:crypto'
import { open, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { cliOk, sleep, waitFor, type Site } from '../../agent/demo/local-cluster.js'
import { generateTree, describeTree } from '../../agent/demo/tree-gen.js'
import { connectAgent, type ControlClient } from '../../agent/control/client.js'
import { HomeLayout } from '../../agent/core/home.js'
import type { AgentStatus } from '../../agent/api/api.js'
import { clusterPerTest } from '../helpers/cluster.js'

// Real agents on 127.0.0.1 with real limits: a link's uplink shared by two subscribers, a runtime change,
// persistence across a restart, and the receiver pacing its own downlink.

const TREE_A = 'lab/compose/Server'
const TREE_B = 'lab/compose/Workstation'
const MB = 1e6

const clients: ControlClient[] = []
const samplers: Array<{ stop: () => Promise<void> }> = []
const clusters = clusterPerTest({
  teardown: async () => {
    for (const s of samplers.splice(0)) await s.stop()
    clients.splice(0)
  },
})

/** A control connection kept by the test: sampling status once a second must not cost a process spawn. */
async function control (site: Site): Promise<ControlClient> {
  const client = await connectAgent(new HomeLayout(site.home))
  if (client === undefined) throw new Error(`${site.name}: no agent`)
  clients.push(client)
  return client
}

interface Sample { t: number, up: Map<string, number>, down: number }

/** Samples `site`'s counters every `intervalMs` until stopped: bytes sent per peer, chunk bytes received in total. */
function sampler (client: ControlClient, intervalMs = 500): { samples: Sample[], stop: () => Promise<void> } {
  const samples: Sample[] = []
  let running = true
  const loop = (async () => {
    while (running) {
      const before = performance.now()
      const s: AgentStatus = await client.status()
      samples.push({ t: (before + performance.now()) / 2, up: new Map(s.peers.map(p => [p.peerId, p.bytesUp])), down: s.counters.chunkBytesDown })
      await sleep(Math.max(0, intervalMs - (performance.now() - before)))
    }
  })()
  const handle = { samples, stop: async () => { running = false; await loop } }
  samplers.push(handle)
  return handle
}

/** Bytes/s between the samples nearest to `from` and `to` (ms, performance.now()). */
function rateBetween (samples: Sample[], from: number, to: number, of: (s: Sample) => number): number {
  const nearest = (t: number): Sample => samples.reduce((best, s) => Math.abs(s.t - t) < Math.abs(best.t - t) ? s : best)
  const a = nearest(from)
  const b = nearest(to)
  return (of(b) - of(a)) / ((b.t - a.t) / 1000)
}

async function writeRandomFile (path: string, bytes: number): Promise<void> {
  const fh = await open(path, 'w')
  try {
    for (let done = 0; done < bytes; done += 1 << 20) await fh.write(randomBytes(Math.min(1 << 20, bytes - done)))
  } finally {
    await fh.close()
  }
}

describe('bandwidth limits (real agents)', () => {
  it('holds a link limit shared fairly by two subscribers, applies runtime changes within a second and keeps them, and paces a receiver', async () => {
    const cluster = await clusters.create('deltamesh-bw-')
    // Each subscriber pulls its own tree, so every byte it gets crosses the origin's limited link (no
    // swapping between them). ~175 MB each: at 5 MB/s per subscriber the transfer outlasts the warm-up,
    // the 20 s measurement and the runtime-change phase.
    const sourceA = join(cluster.dir, 'source-a')
    const sourceB = join(cluster.dir, 'source-b')
    await generateTree(sourceA, { seed: 'e2e-bandwidth-a', files: 100, largeBytes: 165 * 1024 * 1024, largeFiles: 2, smallMax: 64 * 1024 })
    await generateTree(sourceB, { seed: 'e2e-bandwidth-b', files: 100, largeBytes: 165 * 1024 * 1024, largeFiles: 2, smallMax: 64 * 1024 })
    const origin = await cluster.addSite('origin')
    const a = await cluster.addSite('a')
    const b = await cluster.addSite('b')
    await cluster.wire(TREE_A, origin)
    for (const s of cluster.sites) await cliOk(['trust', '--home', s.home, TREE_B, origin.publisherKey])
    await cluster.editConfig(origin, { links: [{ name: 'labs', peers: ['a', 'b'], up: '10MB/s' }] })
    for (const s of cluster.sites) await cluster.start(s)
    const originApi = await control(origin)
    const aApi = await control(a)
    const { seq } = await originApi.publish({ tree: TREE_A, source: sourceA })
    const { seq: seqB } = await originApi.publish({ tree: TREE_B, source: sourceB })

    const watch = sampler(originApi)
    await cliOk(['subscribe', '--home', a.home, TREE_A, '--to', join(cluster.dir, 'a-mirror')])
    await cliOk(['subscribe', '--home', b.home, TREE_B, '--to', join(cluster.dir, 'b-mirror')])
    const upTo = (peer: string) => (s: Sample) => s.up.get(peer) ?? 0
    const total = (s: Sample): number => upTo(a.peerId)(s) + upTo(b.peerId)(s)
    // the subscribers first fetch and plan the manifest; the measurement starts once chunks flow
    const latest = (): Sample => watch.samples.at(-1) ?? { t: 0, up: new Map(), down: 0 }
    await waitFor('chunks to flow to both', async () => upTo(a.peerId)(latest()) > MB && upTo(b.peerId)(latest()) > MB, 60_000, 100)
    const started = performance.now() + 3000

    // 1. 10 MB/s on the link, over every 10 s window of a 20 s transfer after 3 s of warm-up; each subscriber gets half
    await sleep(3000 + 20_000)
    const windows: Array<{ link: number, shares: number[] }> = []
    for (let from = started; from + 10_000 <= started + 20_000; from += 1000) {
      const to = from + 10_000
      const link = rateBetween(watch.samples, from, to, total) / MB
      const shares = [a.peerId, b.peerId].map(peer => rateBetween(watch.samples, from, to, upTo(peer)) / MB)
      windows.push({ link, shares })
    }
    const report = `link rate over 10 s windows, MB/s: ${windows.map(w => `${w.link.toFixed(2)} (${w.shares.map(x => x.toFixed(2)).join(' + ')})`).join(', ')}`
    process.stdout.write(report + '\n')
    for (const w of windows) {
      expect(w.link, report).toBeGreaterThan(9.5)
      expect(w.link, report).toBeLessThan(10.5)
      for (const share of w.shares) {
        expect(share, report).toBeGreaterThan(4.5)
        expect(share, report).toBeLessThan(5.5)
      }
    }
    const aStatus = await aApi.status()
    expect(aStatus.trees.find(t => t.name === TREE_A)?.currentSeq, 'still syncing when the limit changes').toBeUndefined()

    // 2. a runtime change: 4 MB/s from within one second of the command returning
    await cliOk(['limit', '--home', origin.home, '--link', 'labs', '--up', '4MB/s'])
    const changed = performance.now()
    await sleep(5000)
    const after = rateBetween(watch.samples, changed + 1000, changed + 5000, total) / MB
    expect(after).toBeGreaterThan(3.8)
    expect(after).toBeLessThan(4.2)
    const link = (await originApi.status()).links.find(l => l.name === 'labs')
    expect(link).toMatchObject({ limit: { up: 4 * MB }, override: { up: '4MB/s' } })
    expect(link?.rate.up).toBeGreaterThan(3 * MB)
    await watch.stop()

    // lifted: both finish, byte-identical
    await cliOk(['limit', '--home', origin.home, '--link', 'labs', '--up', 'unlimited'])
    await cliOk(['sync', '--home', a.home, TREE_A, '--seq', String(seq), '--timeout', '120'], { timeoutMs: 130_000 })
    await cliOk(['sync', '--home', b.home, TREE_B, '--seq', String(seqB), '--timeout', '120'], { timeoutMs: 130_000 })
    expect(await describeTree(join(cluster.dir, 'a-mirror'))).toEqual(await describeTree(sourceA))
    expect(await describeTree(join(cluster.dir, 'b-mirror'))).toEqual(await describeTree(sourceB))

    // kept across a restart, in limits.json
    expect(JSON.parse(await readFile(join(origin.home, 'limits.json'), 'utf8'))).toMatchObject({ links: { labs: { up: 'unlimited' } } })
    await cluster.stop(origin)
    await cluster.start(origin)
    const restarted = JSON.parse(await cliOk(['limit', '--home', origin.home, '--json'])) as AgentStatus['links']
    expect(restarted.find(l => l.name === 'labs')).toMatchObject({ limit: { up: null }, override: { up: 'unlimited' }, configured: { up: 10 * MB } })

    // 3. the receiver paces what it asks for: a's downlink at 6 MB/s for a 60 MB v2
    await cliOk(['limit', '--home', a.home, '--down', '6MB/s'])
    await writeRandomFile(join(sourceA, 'images', 'update.img'), 60 * 1024 * 1024)
    const originApi2 = await control(origin)
    const v2 = await originApi2.publish({ tree: TREE_A, source: sourceA })
    const down = sampler(await control(a))
    const v2Started = performance.now()
    await sleep(8000)
    const pulled = rateBetween(down.samples, v2Started + 2000, v2Started + 8000, s => s.down) / MB
    expect(pulled).toBeGreaterThan(5.7)
    expect(pulled).toBeLessThan(6.3)
    await down.stop()
    await cliOk(['limit', '--home', a.home, '--reset'])
    await cliOk(['sync', '--home', a.home, TREE_A, '--seq', String(v2.seq), '--timeout', '120'], { timeoutMs: 130_000 })
    expect(await describeTree(join(cluster.dir, 'a-mirror'))).toEqual(await describeTree(sourceA))
    await waitFor('a to drop its runtime limit', async () => (await aApi.status()).links[0]?.limit.down === null, 5000)
  })
})
