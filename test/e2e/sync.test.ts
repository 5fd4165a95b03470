import { cp, lstat, readlink } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { cliOk, waitFor } from '../../agent/demo/local-cluster.js'
import type { AgentStatus } from '../../agent/api/api.js'
import { describeTree, generateTree, mutateTree, type TreeSpec } from '../../agent/demo/tree-gen.js'
import { treeCommands } from '../helpers/tree-commands.js'
import { clusterPerTest, chunkSet } from '../helpers/cluster.js'

// Real agents as separate processes on 127.0.0.1: publish, gossip, heads exchange, swarming, resume.

const TREE = 'lab/compose/BaseOS'
const { subscribe, publish, syncDone } = treeCommands(TREE)
const SPEC: TreeSpec = { seed: 'e2e-sync', files: 300, largeBytes: 24 * 1024 * 1024, largeFiles: 2, smallMax: 64 * 1024 }

const clusters = clusterPerTest()

/** Unique chunk bytes of `after` not present in `before`, from `deltamesh manifest --entries`. */
async function lackedBytes (before: string, after: string): Promise<number> {
  const had = await chunkSet(before)
  let lacked = 0
  for (const [id, size] of await chunkSet(after)) if (!had.has(id)) lacked += size
  return lacked
}

describe('peer-to-peer sync (real agents)', () => {
  it('two subscribers converge on v1, then pull only the delta of v2', async () => {
    const cluster = await clusters.create()
    const source = join(cluster.dir, 'source')
    await generateTree(source, SPEC)
    const origin = await cluster.addSite('origin')
    const a = await cluster.addSite('a')
    const b = await cluster.addSite('b')
    await cluster.wire(TREE, origin)
    for (const s of cluster.sites) await cluster.start(s)
    const mirrorA = await subscribe(cluster, a)
    const mirrorB = await subscribe(cluster, b)

    const seq1 = await publish(origin, source, 'v1')
    await Promise.all([syncDone(a, seq1), syncDone(b, seq1)])
    const v1 = await describeTree(source)
    expect(await describeTree(mirrorA)).toEqual(v1)
    expect(await describeTree(mirrorB)).toEqual(v1)
    const v1Copy = join(cluster.dir, 'v1-copy')
    await cp(source, v1Copy, { recursive: true, verbatimSymlinks: true })

    const [aBefore, bBefore, originBefore] = await Promise.all([cluster.status(a), cluster.status(b), cluster.status(origin)])
    await mutateTree(source, 'e2e-v2')
    const seq2 = await publish(origin, source, 'v2')
    await Promise.all([syncDone(a, seq2), syncDone(b, seq2)])
    const v2 = await describeTree(source)
    expect(await describeTree(mirrorA)).toEqual(v2)
    expect(await describeTree(mirrorB)).toEqual(v2)
    // the subscription path is a symlink to the complete version directory
    expect((await lstat(mirrorA)).isSymbolicLink()).toBe(true)
    expect(await readlink(mirrorA)).toMatch(/versions\/2$/)

    const lacked = await lackedBytes(v1Copy, source)
    const [aAfter, bAfter, originAfter] = await Promise.all([cluster.status(a), cluster.status(b), cluster.status(origin)])
    const delta = (after: AgentStatus, before: AgentStatus, key: keyof AgentStatus['counters']): number => after.counters[key] - before.counters[key]
    expect(lacked).toBeGreaterThan(0)
    // everything a subscriber read from its peers (chunk frames, manifest, heads) stays within 1.2 × what it lacked
    expect(delta(aAfter, aBefore, 'bytesDown')).toBeLessThanOrEqual(1.2 * lacked)
    expect(delta(bAfter, bBefore, 'bytesDown')).toBeLessThanOrEqual(1.2 * lacked)
    // chunk payload received by the subscribers is exactly what was sent: by the origin, and by each other
    const payloadDown = delta(aAfter, aBefore, 'chunkBytesDown') + delta(bAfter, bBefore, 'chunkBytesDown')
    const payloadUp = delta(originAfter, originBefore, 'chunkBytesUp') + delta(aAfter, aBefore, 'chunkBytesUp') + delta(bAfter, bBefore, 'chunkBytesUp')
    expect(payloadUp).toBe(payloadDown)
    // the source was edited in place, yet the edited files travelled as deltas (matched at publish against the
    // signatures of v1): less chunk payload than the two subscribers lacked; new files still came as chunks
    expect(payloadDown).toBeGreaterThan(0)
    expect(payloadDown).toBeLessThan(2 * lacked)
  })

  it('an agent started after v2 was published catches up; with the publisher gone it pulls from a peer', async () => {
    const cluster = await clusters.create()
    const source = join(cluster.dir, 'source')
    await generateTree(source, SPEC)
    const origin = await cluster.addSite('origin')
    const a = await cluster.addSite('a')
    const late = await cluster.addSite('late')
    await cluster.wire(TREE, origin)
    await cluster.start(origin)
    await cluster.start(a)
    const mirrorA = await subscribe(cluster, a)
    await publish(origin, source, 'v1')
    await mutateTree(source, 'e2e-late')
    const seq2 = await publish(origin, source, 'v2')
    await syncDone(a, seq2)
    expect(await describeTree(mirrorA)).toEqual(await describeTree(source))

    // the publisher goes away; the late agent never heard an announcement and learns v2 from a's heads
    await cluster.stop(origin)
    await cluster.start(late)
    const mirrorLate = await subscribe(cluster, late)
    await syncDone(late, seq2)
    expect(await describeTree(mirrorLate)).toEqual(await describeTree(source))
    const status = await cluster.status(late)
    expect(status.trees.find(t => t.name === TREE)?.currentSeq).toBe(2)
  })

  it('a subscriber killed mid-sync resumes without refetching and never exposes a partial tree', async () => {
    const cluster = await clusters.create()
    const source = join(cluster.dir, 'source')
    await generateTree(source, { ...SPEC, largeBytes: 60 * 1024 * 1024 })
    const origin = await cluster.addSite('origin')
    const a = await cluster.addSite('a')
    await cluster.wire(TREE, origin)
    // the origin serves at 10 MB/s so the sync lasts long enough to be killed in the middle
    await cluster.editConfig(origin, { limits: { up: '10MB/s' } })
    await cluster.start(origin)
    await cluster.start(a)
    const mirror = await subscribe(cluster, a)
    const seq = await publish(origin, source)

    let partialSeen = false
    const watcher = setInterval(() => {
      lstat(mirror).then(st => { if (!st.isSymbolicLink()) partialSeen = true }, () => { /* not there yet: fine */ })
    }, 20)
    try {
      await waitFor('a to be mid-sync', async () => {
        const t = (await cluster.status(a)).trees.find(x => x.name === TREE)
        return t?.sync?.phase === 'fetching' && t.sync.bytesDone > 10 * 1024 * 1024
      }, 60_000, 100)
      const before = (await cluster.status(a)).trees.find(x => x.name === TREE)?.sync
      await cluster.stop(a, 'SIGKILL')
      expect(await lstat(mirror).then(() => true, () => false)).toBe(false) // nothing exposed before completion
      await cluster.start(a)
      await syncDone(a, seq)
      expect(await describeTree(mirror)).toEqual(await describeTree(source))
      const after = (await cluster.status(a)).counters.bytesDown
      // after the restart only what was missing came over the wire (counters restart with the process)
      expect(after).toBeLessThan((before!.bytesTotal - before!.bytesDone) * 1.2 + 2 * 1024 * 1024)
      expect(partialSeen).toBe(false)
    } finally {
      clearInterval(watcher)
    }
  })

  it('when the publisher dies mid-sync, a subscriber finishes from a peer that holds the version', async () => {
    const cluster = await clusters.create()
    const source = join(cluster.dir, 'source')
    await generateTree(source, { ...SPEC, largeBytes: 24 * 1024 * 1024 })
    const origin = await cluster.addSite('origin')
    const fast = await cluster.addSite('fast')
    const slow = await cluster.addSite('slow')
    await cluster.wire(TREE, origin)
    // a lab behind a thin line: still syncing when the publisher goes, even when each status poll takes a second
    await cluster.editConfig(slow, { limits: { down: '1MB/s' } })
    for (const s of cluster.sites) await cluster.start(s)
    await subscribe(cluster, fast)
    const seq = await publish(origin, source)
    await syncDone(fast, seq)
    // subscribed once fast holds the version: its sync cannot be over before the test looks
    const mirror = await subscribe(cluster, slow)
    await waitFor('slow to be mid-sync', async () => {
      const t = (await cluster.status(slow)).trees.find(x => x.name === TREE)
      return t?.sync?.phase === 'fetching' && t.sync.bytesDone > 1024 * 1024 && t.sync.bytesDone < t.sync.bytesTotal * 0.9
    }, 60_000, 100)
    await cluster.stop(origin, 'SIGKILL')
    await syncDone(slow, seq)
    expect(await describeTree(mirror)).toEqual(await describeTree(source))
    const fromFast = (await cluster.status(slow)).peers.find(p => p.peerId === fast.peerId)
    expect(fromFast?.chunkBytesDown ?? 0).toBeGreaterThan(0)
  })

  it('a lab subscribed with --include pulls only that part, and verify checks only that part', async () => {
    const cluster = await clusters.create()
    const source = join(cluster.dir, 'source')
    await generateTree(source, { seed: 'e2e-include', files: 80, largeBytes: 4 * 1024 * 1024, largeFiles: 1, smallMax: 32 * 1024 })
    const origin = await cluster.addSite('origin')
    const lab = await cluster.addSite('lab')
    await cluster.wire(TREE, origin)
    for (const s of cluster.sites) await cluster.start(s)
    const to = join(cluster.dir, 'lab-mirror')
    await cliOk(['subscribe', '--home', lab.home, TREE, '--to', to, '--include', 'Packages/x86_64/**', '--include', 'repodata/**'])
    await syncDone(lab, await publish(origin, source))
    const all = await describeTree(source)
    const wanted = Object.fromEntries(Object.entries(all).filter(([p]) => p === 'Packages' || p === 'Packages/x86_64' || p.startsWith('Packages/x86_64/') || p.startsWith('repodata')))
    expect(await describeTree(to)).toEqual(wanted)
    const images = Object.entries(all).filter(([p]) => p.startsWith('images/')).reduce((n, [, d]) => n + Number(d.split(' ')[2]), 0)
    expect((await cluster.status(lab)).counters.chunkBytesDown).toBeLessThan(images) // the image never crossed
    expect(await cliOk(['verify', '--home', lab.home, TREE])).toMatch(/0 problem/)
  })

  it('a site migrating from an rsync mirror subscribes with --seed: only what differs from its copy crosses the wire', async () => {
    const cluster = await clusters.create()
    const source = join(cluster.dir, 'source')
    await generateTree(source, { seed: 'e2e-seed', files: 120, largeBytes: 8 * 1024 * 1024, largeFiles: 1, smallMax: 32 * 1024 })
    // the site's old mirror: yesterday's tree (5 % of packages changed since, one large file grown in the middle)
    const mirror = join(cluster.dir, 'old-rsync-mirror')
    await cp(source, mirror, { recursive: true, preserveTimestamps: true })
    await mutateTree(mirror, 'e2e-seed-yesterday')
    const before = await describeTree(mirror)
    const origin = await cluster.addSite('origin')
    const lab = await cluster.addSite('lab')
    await cluster.wire(TREE, origin)
    for (const s of cluster.sites) await cluster.start(s)
    const to = join(cluster.dir, 'lab-tree')
    await cliOk(['subscribe', '--home', lab.home, TREE, '--to', to, '--seed', mirror])
    await syncDone(lab, await publish(origin, source))
    expect(await describeTree(to)).toEqual(await describeTree(source))
    const lacked = await lackedBytes(mirror, source)
    const fetched = (await cluster.status(lab)).counters.chunkBytesDown
    expect(fetched).toBeLessThanOrEqual(1.2 * lacked)
    expect(fetched).toBeLessThan(0.25 * Object.values(await describeTree(source)).filter(d => d.startsWith('file ')).reduce((n, d) => n + Number(d.split(' ')[2]), 0))
    // the seed is read, never written: its files still hold yesterday's bytes
    const after = await describeTree(mirror)
    for (const [path, d] of Object.entries(before)) if (d.startsWith('file ')) expect(after[path]?.split(' ').slice(2).join(' ')).toBe(d.split(' ').slice(2).join(' '))
    expect(await cliOk(['verify', '--home', lab.home, TREE])).toMatch(/0 problem/)
  })
})
