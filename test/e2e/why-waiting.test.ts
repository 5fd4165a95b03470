import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { cliOk, runCli, waitFor, type Cluster, type Site } from '../../agent/demo/local-cluster.js'
import { pseudoRandomBytes } from '../../agent/demo/tree-gen.js'
import type { AgentStatus, TreeStatus } from '../../agent/api/api.js'
import type { DashboardSnapshot } from '../../agent/dashboard/snapshot.js'
import { treeCommands } from '../helpers/tree-commands.js'
import { clusterPerTest } from '../helpers/cluster.js'

// Issue 24.4 with real agents: a sync that waits says why — in `sync`'s output, `status --json` and the
// dashboard — when the version announced was refused (no trusted key), and when the publisher can no longer
// serve it (its source rewritten after publish).

const TREE = 'lab/why'
const { publish, syncDone } = treeCommands(TREE)
const clusters = clusterPerTest()

async function source (c: Cluster): Promise<string> {
  const dir = join(c.dir, 'source')
  await mkdir(join(dir, 'images'), { recursive: true })
  await writeFile(join(dir, 'images', 'disk.img'), pseudoRandomBytes('why-waiting', 3 * 1024 * 1024))
  await writeFile(join(dir, 'README'), 'a small file\n')
  return dir
}

/** origin and lab, peers of each other; the lab trusts the origin for TREE only if `trust`. */
async function start (trust: boolean): Promise<{ c: Cluster, origin: Site, lab: Site, src: string }> {
  const c = await clusters.create()
  const src = await source(c)
  const origin = await c.addSite('origin')
  const lab = await c.addSite('lab')
  // status gossip every 300 ms: a subscriber hears soon what its publisher says of its versions
  for (const s of c.sites) await c.editConfig(s, { dashboard: { statusIntervalMs: 300 } })
  await cliOk(['peers', 'add', '--home', origin.home, '--name', 'lab', lab.multiaddr])
  await cliOk(['peers', 'add', '--home', lab.home, '--name', 'origin', origin.multiaddr])
  if (trust) await cliOk(['trust', '--home', lab.home, TREE, origin.publisherKey])
  for (const s of c.sites) await c.start(s)
  return { c, origin, lab, src }
}

async function treeOf (site: Site): Promise<TreeStatus> {
  const status = JSON.parse(await cliOk(['status', '--home', site.home, '--json'])) as AgentStatus
  const t = status.trees.find(x => x.name === TREE)
  if (t === undefined) throw new Error(`${site.name}: no ${TREE} in status`)
  return t
}

async function snapshotOf (c: Cluster, site: Site): Promise<DashboardSnapshot> {
  const url = (await c.status(site)).dashboard?.url
  if (url === undefined) throw new Error('no dashboard')
  return await (await fetch(new URL('api/snapshot', url))).json() as DashboardSnapshot
}

describe('a waiting sync says why (real agents)', () => {
  it('a version refused for an untrusted key: sync, status --json and the dashboard say so; trusting the key ends the wait', async () => {
    const { c, origin, lab, src } = await start(false)
    const mirror = join(c.dir, 'lab-mirror')
    const sub = await runCli(['subscribe', '--home', lab.home, TREE, '--to', mirror])
    expect(sub.code).toBe(0)
    expect(sub.stdout).toContain(`deltamesh sync --home ${lab.home} ${TREE}`)
    expect(sub.stderr).toContain(`no publisher key is trusted for ${TREE}`)
    const seq = await publish(origin, src, 'v1')

    const sync = await runCli(['sync', '--home', lab.home, TREE, '--timeout', '6'], { timeoutMs: 30_000 })
    expect(sync.code).toBe(3)
    const expected = `version ${seq} announced by origin refused: untrusted-key (signed by ${origin.publisherKey}`
    expect(sync.stderr).toContain(`timed out after 6 s waiting: ${expected}`)
    expect(sync.stderr).toContain(`deltamesh trust --home DIR ${TREE} ${origin.publisherKey}`)
    const t = await treeOf(lab)
    expect(t.stuck).toMatchObject({ reason: 'untrusted-key' })
    expect(t.stuck?.message).toContain(expected)
    const snap = await snapshotOf(c, lab)
    expect(snap.trees.find(x => x.name === TREE)?.stuck).toContain(expected)

    await cliOk(['trust', '--home', lab.home, TREE, origin.publisherKey])
    await syncDone(lab, seq, 60)
    expect((await treeOf(lab)).stuck).toBeUndefined()
  })

  it('a version whose source was rewritten after publish: the origin marks it not fully servable, the lab says publish again', async () => {
    const { c, origin, lab, src } = await start(true)
    const seq = await publish(origin, src, 'v1')
    // the image rewritten in place, same size: the version's chunks of it exist nowhere any more
    await writeFile(join(src, 'images', 'disk.img'), pseudoRandomBytes('rewritten', 3 * 1024 * 1024))
    await cliOk(['subscribe', '--home', lab.home, TREE, '--to', join(c.dir, 'lab-mirror')])

    const sync = await runCli(['sync', '--home', lab.home, TREE, '--seq', String(seq), '--timeout', '12'], { timeoutMs: 40_000 })
    expect(sync.code).toBe(3)
    expect(sync.stderr).toMatch(new RegExp(`no peer holds \\d+ chunks \\([^)]+\\) of ${TREE}@${seq}: origin cannot serve ${TREE}@${seq} completely: its source changed after it was published; publish again there`))
    const t = await treeOf(lab)
    expect(t.stuck?.reason).toBe('source-changed')
    expect(t.sync?.phase).toBe('fetching')

    const published = (await treeOf(origin)).versions.find(v => v.seq === seq)
    expect(published?.state).toBe('complete')
    expect(published?.unservable?.paths).toEqual(['images/disk.img'])
    expect(published?.unservable?.message).toContain('publish again')
    const text = await cliOk(['status', '--home', origin.home])
    expect(text).toContain(`${TREE}@${seq}: not fully servable: the source changed after ${TREE}@${seq} was published`)
    await waitFor('the stuck sync on the dashboard', async () => (await snapshotOf(c, lab)).trees.find(x => x.name === TREE)?.stuck?.includes('publish again there') === true, 10_000)

    // publishing again is the way out: the lab completes the new version
    const seq2 = await publish(origin, src, 'v2')
    await syncDone(lab, seq2, 60)
    expect((await treeOf(lab)).stuck).toBeUndefined()
  })
})
