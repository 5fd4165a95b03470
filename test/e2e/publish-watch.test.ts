import { spawn } from 'node:child_process'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { CLI, cliOk, sleep, waitFor, type Cluster, type Site } from '../../agent/demo/local-cluster.js'
import type { AgentStatus } from '../../agent/api/api.js'
import { describeTree, generateTree } from '../../agent/demo/tree-gen.js'
import { treeCommands } from '../helpers/tree-commands.js'
import { clusterPerTest } from '../helpers/cluster.js'

// Publish on change (issue 19, part 2), with real agents: [[publish]] watch = true publishes the source at
// start, again once it has been quiet, and within maxDelay while it keeps changing; a change made while the
// agent was down is published when it starts again; `deltamesh publish --watch` does the same from the CLI.

const TREE = 'dlrn/trunk/centos9'
const { subscribe, syncDone } = treeCommands(TREE)
const clusters = clusterPerTest()

async function originAndLab (cluster: Cluster, source: string): Promise<{ origin: Site, lab: Site }> {
  const origin = await cluster.addSite('origin')
  const lab = await cluster.addSite('lab')
  await cluster.wire(TREE, origin)
  await cluster.editConfig(origin, { publish: [{ tree: TREE, src: source, watch: true, quiet: '400ms', maxDelay: '3s', label: 'dlrn-{seq}' }] })
  return { origin, lab }
}

const watchOf = (s: AgentStatus): NonNullable<AgentStatus['watches']>[number] | undefined => s.watches?.find(w => w.tree === TREE)
const versionsOf = (s: AgentStatus): number[] => s.trees.find(t => t.name === TREE)?.versions.map(v => v.seq) ?? []

describe('publish on change (real agents)', () => {
  it('publishes at start, after a quiet period, within maxDelay of constant change, and after a restart', async () => {
    const cluster = await clusters.create('deltamesh-watch-')
    const source = join(cluster.dir, 'source')
    await generateTree(source, { seed: 'e2e-watch', files: 60, largeBytes: 1024 * 1024, largeFiles: 1, smallMax: 16 * 1024 })
    const { origin, lab } = await originAndLab(cluster, source)
    await cluster.start(origin)
    await cluster.start(lab)
    const mirror = await subscribe(cluster, lab)

    // at start: version 1, labelled from the template, and the lab gets it
    await syncDone(lab, 1)
    let status = await cluster.status(origin)
    expect(status.trees.find(t => t.name === TREE)?.versions[0]?.label).toBe('dlrn-1')
    expect(watchOf(status)).toMatchObject({ src: source, phase: 'idle', publishes: 1, quietMs: 400, maxDelayMs: 3000 })
    expect(watchOf(status)?.dirs).toBeGreaterThan(0)
    expect(await cliOk(['status', '--home', origin.home])).toMatch(/PUBLISH ON CHANGE[\s\S]*dlrn\/trunk\/centos9.*idle/)
    // the dashboard's snapshot carries the watch state the page shows above the tree's history
    const snapshot = await (await fetch(new URL('/api/snapshot', status.dashboard?.url))).json() as { watches: Array<{ tree: string, phase: string, src: string }> }
    expect(snapshot.watches).toMatchObject([{ tree: TREE, src: source, phase: 'idle' }])

    // a change in a new subdirectory: published once quiet, and synced
    await mkdir(join(source, 'repos', 'a1'), { recursive: true })
    await writeFile(join(source, 'repos', 'a1', 'repomd.xml'), '<repomd>1</repomd>\n')
    await syncDone(lab, 2)
    expect(await describeTree(mirror)).toEqual(await describeTree(source))

    // constant change (a file every 100 ms, never quiet for 400 ms): a version still comes within maxDelay
    const before = versionsOf(await cluster.status(origin)).length
    const start = Date.now()
    let publishedWhileBusyMs: number | undefined
    for (let i = 0; Date.now() - start < 6_000; i++) {
      await writeFile(join(source, 'repos', 'a1', `build-${i}.log`), `line ${i}\n`)
      if (publishedWhileBusyMs === undefined && versionsOf(await cluster.status(origin)).length > before) publishedWhileBusyMs = Date.now() - start
      await sleep(100)
    }
    expect(publishedWhileBusyMs).toBeDefined()
    expect(publishedWhileBusyMs as number).toBeLessThan(3_000 + 2_000)

    // stopped, changed, started: the change is published at start, with no further change
    await waitFor('the watch to be idle', async () => watchOf(await cluster.status(origin))?.phase === 'idle', 20_000)
    // two publishes of the tree asked at once (an operator's and another) run one after the other
    const forced = await Promise.all([1, 2].map(async () => JSON.parse(await cliOk(['publish', '--home', origin.home, TREE, source, '--force', '--json'])) as { seq: number }))
    const seqs = forced.map(f => f.seq).sort((a, b) => a - b)
    expect(seqs[1]).toBe((seqs[0] as number) + 1)
    const held = Math.max(...versionsOf(await cluster.status(origin)))
    expect(held).toBe(seqs[1])
    await cluster.stop(origin)
    await writeFile(join(source, 'changed-while-down.txt'), 'x\n')
    await cluster.start(origin)
    await syncDone(lab, held + 1)
    expect(await describeTree(mirror)).toEqual(await describeTree(source))
    status = await cluster.status(origin)
    expect(Math.max(...versionsOf(status))).toBe(held + 1)
    // one publish at a time, every one of them counted
    expect(watchOf(status)).toMatchObject({ phase: 'idle', publishes: 1, last: { seq: held + 1 } })
  }, 240_000)

  it('deltamesh publish --watch publishes now and on each change, one JSON line each, and stops on SIGINT', async () => {
    const cluster = await clusters.create('deltamesh-watch-cli-')
    const source = join(cluster.dir, 'source')
    await generateTree(source, { seed: 'e2e-watch-cli', files: 20, largeBytes: 0, largeFiles: 0, smallMax: 8 * 1024 })
    const site = await cluster.addSite('builder')
    const child = spawn(process.execPath, [CLI, 'publish', '--home', site.home, TREE, source, '--watch', '--quiet', '300ms', '--label', 'cli-{seq}', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
    const lines = (): Array<{ seq: number, label: string, unchanged?: boolean }> => stdout.split('\n').filter(l => l.startsWith('{')).map(l => JSON.parse(l) as { seq: number, label: string })
    try {
      await waitFor('the first publish', async () => lines().length === 1, 30_000)
      expect(stderr).toMatch(/watching .* publishing dlrn\/trunk\/centos9 once quiet for 300ms/)
      await writeFile(join(source, 'new.rpm'), 'rpm\n')
      await waitFor('the second publish', async () => lines().length === 2, 30_000)
      expect(lines().map(l => [l.seq, l.label])).toEqual([[1, 'cli-1'], [2, 'cli-2']])
    } finally {
      const exited = new Promise<number | null>(resolve => child.once('exit', code => resolve(code)))
      child.kill('SIGINT')
      expect(await exited).toBe(0)
    }
  }, 120_000)
})
