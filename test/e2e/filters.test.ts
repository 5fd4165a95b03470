import { lstat, readdir, readlink, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { Cluster, cliOk, runCli, type Site } from '../../agent/demo/local-cluster.js'
import { describeTree, generateTree, type TreeSpec } from '../../agent/demo/tree-gen.js'
import type { AgentStatus, TreeStatus } from '../../agent/api/api.js'
import type { DashboardSnapshot } from '../../agent/dashboard/snapshot.js'
import { treeCommands } from '../helpers/tree-commands.js'
import { clusterPerTest } from '../helpers/cluster.js'

// Subscription filters with real agents on 127.0.0.1: rsync-style patterns, the refusal of a version that
// would empty the mirror (issue 24.2), a changed filter applied to the version already held.

const TREE = 'lab/compose/BaseOS'
const { publish, syncDone } = treeCommands(TREE)
const SPEC: TreeSpec = { seed: 'e2e-filters', files: 60, largeBytes: 2 * 1024 * 1024, largeFiles: 1, smallMax: 16 * 1024 }

const clusters = clusterPerTest()

/** An origin that published nothing yet and a lab, wired and running; the source tree generated. */
async function start (): Promise<{ c: Cluster, origin: Site, lab: Site, source: string, mirror: string }> {
  const c = await clusters.create()
  const source = join(c.dir, 'source')
  await generateTree(source, SPEC)
  const origin = await c.addSite('origin')
  const lab = await c.addSite('lab')
  await c.wire(TREE, origin)
  for (const s of c.sites) await c.start(s)
  return { c, origin, lab, source, mirror: join(c.dir, 'lab-mirror') }
}

/** The source's entries under the given top-level paths (and the directories above them). */
async function partOf (source: string, ...prefixes: string[]): Promise<Record<string, string>> {
  const all = await describeTree(source)
  return Object.fromEntries(Object.entries(all).filter(([p]) => prefixes.some(x => p === x || p.startsWith(`${x}/`) || x.startsWith(`${p}/`))))
}

async function treeStatus (c: Cluster, site: Site): Promise<TreeStatus> {
  const status = JSON.parse(await cliOk(['status', '--home', site.home, '--json'])) as AgentStatus
  const t = status.trees.find(x => x.name === TREE)
  if (t === undefined) throw new Error(`${site.name}: no ${TREE} in status`)
  return t
}

const subscribe = async (site: Site, mirror: string, ...args: string[]): Promise<string> => await cliOk(['subscribe', '--home', site.home, TREE, '--to', mirror, ...args])

describe('subscription filters (real agents)', () => {
  it("--include 'Packages/x86_64/' (a trailing slash, rsync's habit) selects that directory and everything under it", async () => {
    const { lab, origin, source, mirror } = await start()
    await subscribe(lab, mirror, '--include', 'Packages/x86_64/', '--include', '/repodata/')
    await syncDone(lab, await publish(origin, source, 'v1'))
    const expected = await partOf(source, 'Packages/x86_64', 'repodata')
    expect(Object.keys(expected).filter(p => p.endsWith('.rpm')).length).toBeGreaterThan(10)
    expect(await describeTree(mirror)).toEqual(expected)
    expect(await cliOk(['verify', '--home', lab.home, TREE])).toMatch(/0 problem/)
  })

  it('an include that matches nothing fails the sync with the reason and leaves the previous version served', async () => {
    const { c, lab, origin, source, mirror } = await start()
    // patterns that cannot mean anything are refused before anything is stored: by the CLI, and by the agent
    const bad = await runCli(['subscribe', '--home', lab.home, TREE, '--to', mirror, '--include', './Packages/'])
    expect(bad.code).toBe(2)
    expect(bad.stderr).toContain('--include "./Packages/"')
    expect(bad.stderr).toContain('"Packages/"')
    await expect(c.api(lab).subscribe({ tree: TREE, to: mirror, include: ['Packages//x86_64'] })).rejects.toMatchObject({ name: 'FilterPatternError', status: 400 })

    await subscribe(lab, mirror, '--include', 'Packages/x86_64/')
    await syncDone(lab, await publish(origin, source, 'v1'))
    const served = await describeTree(mirror)
    const files = Object.values(served).filter(d => d.startsWith('file')).length
    expect(await readlink(mirror)).toMatch(/versions\/1$/)

    // the publisher drops the x86_64 packages: the lab's filter selects none of v2
    await rm(join(source, 'Packages', 'x86_64'), { recursive: true })
    const seq2 = await publish(origin, source, 'v2')
    const sync = await runCli(['sync', '--home', lab.home, TREE, '--seq', String(seq2), '--timeout', '60'], { timeoutMs: 90_000 })
    expect(sync.code).toBe(1)
    expect(sync.stderr).toContain('SelectionRefusedError')
    expect(sync.stderr).toContain("the filter (--include 'Packages/x86_64/') selects 0 of its")
    expect(sync.stderr).toContain(`v1 (${files} files) stays served at ${mirror}`)
    expect(sync.stderr).toContain('--allow-empty')
    // asked again after the refusal: the same answer at once, not a wait
    const again = await runCli(['sync', '--home', lab.home, TREE, '--timeout', '30'], { timeoutMs: 60_000 })
    expect(again.code).toBe(1)
    expect(again.stderr).toContain('selects 0 of its')

    const t = await treeStatus(c, lab)
    expect(t.currentSeq).toBe(1)
    expect(t.newestSeq).toBe(seq2)
    expect(t.refused).toMatchObject({ seq: seq2, reason: 'empty', selected: 0, previousSeq: 1, previousFiles: files })
    expect(t.refused!.total).toBeGreaterThan(0)
    expect(t.sync).toMatchObject({ seq: seq2, phase: 'failed' })
    expect(t.sync?.error).toContain('selects 0 of its')
    expect(await cliOk(['status', '--home', lab.home])).toContain('selects 0 of its')
    const dashboard = JSON.parse(await cliOk(['status', '--home', lab.home, '--json'])) as AgentStatus
    const snapshot = await (await fetch(new URL('/api/snapshot', dashboard.dashboard!.url))).json() as DashboardSnapshot
    expect(snapshot.trees.find(x => x.name === TREE)?.refused).toMatchObject({ seq: seq2, reason: 'empty' })

    // nothing moved: the same link, the same bytes, no directory for v2
    expect(await readlink(mirror)).toMatch(/versions\/1$/)
    expect(await describeTree(mirror)).toEqual(served)
    expect(await readdir(join(lab.home, 'trees', 'lab%compose%BaseOS', 'versions'))).toEqual(['1'])
  })

  it('a changed filter re-shapes the version already held, without a new publish', async () => {
    const { c, lab, origin, source, mirror } = await start()
    await subscribe(lab, mirror, '--include', 'Packages/x86_64/')
    const seq = await publish(origin, source, 'v1')
    await syncDone(lab, seq)
    expect(await describeTree(mirror)).toEqual(await partOf(source, 'Packages/x86_64'))

    // the field report's steps: unsubscribe, subscribe with other patterns
    await cliOk(['unsubscribe', '--home', lab.home, TREE])
    await subscribe(lab, mirror, '--include', 'Packages/aarch64/', '--include', 'repodata/', '--exclude', '*.1.aarch64.rpm')
    await syncDone(lab, seq)
    const expected = Object.fromEntries(Object.entries(await partOf(source, 'Packages/aarch64', 'repodata')).filter(([p]) => !p.endsWith('.1.aarch64.rpm')))
    expect(Object.keys(expected).some(p => p.startsWith('Packages/aarch64/'))).toBe(true)
    expect(await describeTree(mirror)).toEqual(expected)
    // the same version, rebuilt under a new name and flipped to; the old directory is gone
    expect(await readlink(mirror)).toMatch(/versions\/1\.1$/)
    const versions = join(lab.home, 'trees', 'lab%compose%BaseOS', 'versions')
    expect(await readdir(versions)).toEqual(['1.1'])
    const t = await treeStatus(c, lab)
    expect(t).toMatchObject({ currentSeq: seq, newestSeq: seq, include: ['Packages/aarch64/', 'repodata/'], exclude: ['*.1.aarch64.rpm'] })
    expect(t.refused).toBeUndefined()
    expect(await cliOk(['verify', '--home', lab.home, TREE])).toMatch(/0 problem/)

    // a filter that selects nothing of it is refused like a new version would be: the rebuilt one stays
    await subscribe(lab, mirror, '--include', 'Packages/x86-64/')
    const typo = await runCli(['sync', '--home', lab.home, TREE, '--timeout', '60'], { timeoutMs: 90_000 })
    expect(typo.code).toBe(1)
    expect(typo.stderr).toContain("--include 'Packages/x86-64/'")
    expect(await readlink(mirror)).toMatch(/versions\/1\.1$/)
    expect(await describeTree(mirror)).toEqual(expected)
    expect((await treeStatus(c, lab)).refused).toMatchObject({ seq, reason: 'empty' })
  })

  it('--allow-empty lets an empty selection through', async () => {
    const { c, lab, origin, source, mirror } = await start()
    await subscribe(lab, mirror, '--include', 'debuginfo/', '--allow-empty')
    await syncDone(lab, await publish(origin, source, 'v1'))
    expect((await lstat(mirror)).isSymbolicLink()).toBe(true)
    expect(await readdir(mirror)).toEqual([])
    const t = await treeStatus(c, lab)
    expect(t).toMatchObject({ currentSeq: 1, allowEmpty: true })
    expect(t.refused).toBeUndefined()
  })
})
