import { execFileSync } from 'node:child_process'
import { cp, mkdir, open, readdir, readlink, stat } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { describe, expect, it } from 'vitest'
import { cliOk, runCli, sleep, waitFor } from '../../agent/demo/local-cluster.js'
import { describeTree, generateTree, mutateTree } from '../../agent/demo/tree-gen.js'
import { RoguePeer } from '../helpers/rogue-peer.js'
import { fromHex } from '../../protocol/chunk-id.js'
import { treeCommands } from '../helpers/tree-commands.js'
import { clusterPerTest, chunkSet } from '../helpers/cluster.js'

// Faults with real agents: SIGKILL at many points of a sync, a full disk while materializing, a file
// edited behind the agent's back. A killed agent's LevelDB is reopened by the next start every time.

const TREE = 'lab/compose/BaseOS'
const { subscribe, publish, syncDone } = treeCommands(TREE)

const mounts: string[] = []
const clusters = clusterPerTest({
  teardown: async (cluster) => {
    for (const s of cluster?.sites ?? []) await cluster?.stop(s, 'SIGKILL')
    for (const m of mounts.splice(0)) execFileSync('umount', ['-l', m])
  },
})

/** The distinct chunks of a directory's manifest (what a site holding that tree can serve). */
async function chunksOf (dir: string): Promise<Array<{ id: Uint8Array, size: number }>> {
  return [...await chunkSet(dir)].map(([id, size]) => ({ id: fromHex(id), size }))
}

/**
 * A reader of the subscribed path, as httpd or dnf would be: resolve the link once, then read that version.
 * Every tree it ever sees must be exactly one of the published versions — never a partial or mixed one.
 */
function watchMirror (mirror: string, published: Map<string, string>): { stop: () => Promise<{ reads: number, bad: string[] }> } {
  let running = true
  let reads = 0
  const bad: string[] = []
  const loop = (async () => {
    while (running) {
      const target = await readlink(mirror).catch(() => undefined)
      if (target !== undefined) {
        const tree = await describeTree(resolve(mirror, '..', target)).catch((err: Error) => ({ error: err.message }))
        const key = JSON.stringify(tree)
        if (!published.has(key)) bad.push(`${target}: ${key.slice(0, 200)}`)
        reads++
      } else {
        const st = await stat(mirror).catch(() => undefined)
        if (st !== undefined) bad.push('the subscribed path exists and is not a symlink')
      }
      await sleep(100)
    }
  })()
  return { stop: async () => { running = false; await loop; return { reads, bad } } }
}

describe('faults (real agents)', () => {
  it('SIGKILL of a subscriber at 20+ points over several syncs: each restart resumes, the result is identical, readers never see a partial tree', async () => {
    const cluster = await clusters.create('deltamesh-faults-')
    const source = join(cluster.dir, 'source')
    await generateTree(source, { seed: 'kill-points', files: 120, largeBytes: 6 * 1024 * 1024, largeFiles: 2, smallMax: 64 * 1024 })
    const origin = await cluster.addSite('origin')
    const sub = await cluster.addSite('sub')
    await cluster.wire(TREE, origin)
    await cluster.editConfig(origin, { limits: { up: '2MB/s' } }) // each sync lasts seconds: room for several kills
    await cluster.start(origin)
    await cluster.start(sub)
    const mirror = await subscribe(cluster, sub)
    const published = new Map<string, string>()
    const watcher = watchMirror(mirror, published)
    const kills: Array<{ seq: number, phase: string, afterMs: number }> = []
    let seed = 1
    const random = (): number => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return seed / 2 ** 31 }
    try {
      for (let version = 1; version <= 3 && (kills.length < 20 || version <= 2); version++) {
        if (version > 1) await mutateTree(source, `kill-points-v${version}`, 0.3, 8 * 1024 * 1024)
        published.set(JSON.stringify(await describeTree(source)), `v${version}`)
        const seq = await publish(origin, source)
        // kill the subscriber at a random moment of this sync, restart it, again, until it gets through:
        // mostly while chunks are being written (the interesting part), sometimes at any moment at all
        for (let round = 0; round < 12 && kills.length < 21; round++) {
          const roundStart = Date.now()
          const whileFetching = random() < 0.7
          const afterMs = Math.floor(random() * (whileFetching ? 300 : 1500))
          const deadline = Date.now() + 8000
          let t: { currentSeq?: number, sync?: { phase: string } } | undefined
          for (;;) {
            t = (await cluster.api(sub).status().catch(() => undefined))?.trees.find(x => x.name === TREE)
            if (t?.currentSeq === seq || !whileFetching || t?.sync?.phase === 'fetching' || Date.now() > deadline) break
            await sleep(25)
          }
          await sleep(afterMs)
          t = (await cluster.api(sub).status().catch(() => undefined))?.trees.find(x => x.name === TREE)
          if (t?.currentSeq === seq) break
          kills.push({ seq, phase: t?.sync?.phase ?? 'starting', afterMs })
          const tk = Date.now()
          await cluster.stop(sub, 'SIGKILL')
          await cluster.start(sub) // reopens the LevelDB the killed process left behind
          if (process.env.DEBUG_KILLS === '1') console.log(`kill ${kills.length} seq ${seq} phase ${kills[kills.length - 1]?.phase} restart ${Date.now() - tk} ms, round began ${tk - roundStart} ms before`)
        }
        await syncDone(sub, seq)
        expect(await describeTree(mirror)).toEqual(await describeTree(source))
        expect(await cliOk(['verify', '--home', sub.home, TREE])).toMatch(/0 problem/)
      }
    } finally {
      const seen = await watcher.stop()
      const phases = kills.reduce<Record<string, number>>((m, k) => { m[k.phase] = (m[k.phase] ?? 0) + 1; return m }, {})
      console.log(`kill points: ${kills.length} over ${new Set(kills.map(k => k.seq)).size} syncs, by phase ${JSON.stringify(phases)}; watcher read the mirror ${seen.reads} times, bad reads ${seen.bad.length}`)
      expect(seen.bad).toEqual([])
      expect(seen.reads).toBeGreaterThan(20)
    }
    expect(kills.length).toBeGreaterThanOrEqual(20)
    // kills landed while chunks were being fetched, not only while the agent was starting
    expect(kills.filter(k => k.phase === 'fetching').length).toBeGreaterThanOrEqual(5)
  }, 300_000)

  it.skipIf(process.getuid?.() !== 0)('a full disk while materializing: a clear DiskFullError, the previous version intact and served, success once space is freed', async () => {
    const cluster = await clusters.create('deltamesh-faults-')
    const source = join(cluster.dir, 'source')
    await generateTree(source, { seed: 'disk-full', files: 40, largeBytes: 1024 * 1024, largeFiles: 1, smallMax: 32 * 1024 })
    const origin = await cluster.addSite('origin')
    const sub = await cluster.addSite('sub')
    await cluster.wire(TREE, origin)
    // the subscriber's versions and staging live on a 6 MiB tmpfs (its database does not: a full disk is about the tree)
    const trees = join(sub.home, 'trees')
    await mkdir(trees, { recursive: true })
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=6m', 'tmpfs', trees])
    mounts.push(trees)
    for (const s of [origin, sub]) await cluster.start(s)
    const mirror = await subscribe(cluster, sub)
    const seq1 = await publish(origin, source)
    await syncDone(sub, seq1)
    const v1 = await describeTree(source)
    expect(await describeTree(mirror)).toEqual(v1)
    const v1Source = join(cluster.dir, 'v1-source')
    await cp(source, v1Source, { recursive: true, verbatimSymlinks: true })

    // v2 adds 8 MB that do not fit
    const big = await open(join(source, 'images', 'big.iso'), 'w').catch(async () => { await mkdir(join(source, 'images'), { recursive: true }); return await open(join(source, 'images', 'big.iso'), 'w') })
    for (let i = 0; i < 8; i++) await big.write(Buffer.alloc(1024 * 1024, i + 1).map((b, j) => (b * 31 + j * 7 + i) & 0xff))
    await big.close()
    const seq2 = await publish(origin, source)
    const failed = await runCli(['sync', '--home', sub.home, TREE, '--seq', String(seq2), '--timeout', '60'], { timeoutMs: 70_000 })
    expect(failed.code).not.toBe(0)
    expect(failed.stderr).toMatch(/DiskFullError: Disk full while materializing lab\/compose\/BaseOS@2/)
    expect(sub.log).toMatch(/"name":"DiskFullError"/)
    // the previous version is intact at the subscribed path, still verifies, and is still served to peers
    expect(await readlink(mirror)).toMatch(/versions\/1$/)
    expect(await describeTree(mirror)).toEqual(v1)
    expect(await cliOk(['verify', '--home', sub.home, TREE, '--seq', String(seq1)])).toMatch(/0 problem/)
    // served: a peer asking the subscriber for every chunk of v1 gets all of them, each verified by hash
    const v1Chunks = await chunksOf(v1Source)
    const client = await RoguePeer.start([])
    try {
      client.allow(sub.peerId)
      await cliOk(['peers', 'add', '--home', sub.home, '--name', 'client', client.multiaddr])
      await client.dial(sub.multiaddr)
      const got = await client.fetchFrom(sub.peerId, v1Chunks, AbortSignal.timeout(30_000))
      expect(got).toEqual({ delivered: v1Chunks.length, bytes: v1Chunks.reduce((n, c) => n + c.size, 0), failed: 0 })
    } finally {
      await client.stop()
    }

    // space is freed: the retry (with backoff) completes v2
    execFileSync('mount', ['-o', 'remount,size=64m', trees])
    await syncDone(sub, seq2, 75)
    expect(await describeTree(mirror)).toEqual(await describeTree(source))
    expect(await cliOk(['verify', '--home', sub.home, TREE])).toMatch(/0 problem/)
  })

  it('a file modified behind the agent\'s back is detected by re-hashing and never served', async () => {
    const cluster = await clusters.create('deltamesh-faults-')
    const source = join(cluster.dir, 'source')
    await generateTree(source, { seed: 'tamper', files: 40, largeBytes: 2 * 1024 * 1024, largeFiles: 1, smallMax: 32 * 1024 })
    const origin = await cluster.addSite('origin')
    const holder = await cluster.addSite('holder')
    const late = await cluster.addSite('late')
    await cluster.wire(TREE, origin)
    await cluster.start(origin)
    await cluster.start(holder)
    await subscribe(cluster, holder)
    const seq = await publish(origin, source)
    await syncDone(holder, seq)
    // someone edits the holder's copy in place (same size, so only the hash can tell)
    const images = join(cluster.dir, 'holder-mirror', 'images')
    const victim = join(images, (await readdir(images)).sort()[0] as string)
    const fh = await open(victim, 'r+')
    await fh.write(Buffer.from('TAMPERED'), 0, 8, 100_000)
    await fh.close()
    // the origin goes away: the late site can only ask the holder
    await cluster.stop(origin)
    await cluster.start(late)
    const mirror = await subscribe(cluster, late)
    const t0 = Date.now()
    await waitFor('the holder to refuse the edited chunk', async () => (await cluster.status(holder)).counters.chunksRejected >= 1, 30_000)
    expect(holder.log).toMatch(/indexed chunk no longer matches what is on disk; location dropped/)
    const lateStatus = await cluster.status(late)
    expect(lateStatus.trees.find(t => t.name === TREE)?.currentSeq).toBeUndefined() // it cannot complete from a liar-by-accident
    expect(lateStatus.counters.chunksRejected).toBe(0) // nothing wrong ever reached it: the holder answered DONT_HAVE
    // the origin is back: the late site completes, byte-identical to the source, not to the edited copy
    const t1 = Date.now()
    await cluster.start(origin)
    await syncDone(late, seq)
    console.log(`tamper: detected after ${t1 - t0} ms; completed ${Date.now() - t1} ms after the origin came back`)
    expect(await describeTree(mirror)).toEqual(await describeTree(source))
    // and `verify` names the edited file on the holder
    const verify = await runCli(['verify', '--home', holder.home, TREE])
    expect(verify.code).toBe(2)
    expect(verify.stdout).toContain(victim.slice(images.length - 'images'.length))
  })
})
