import { spawn } from 'node:child_process'
import { chmod, mkdir, readFile, readlink, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { CLI, cliOk, runCli, sleep, waitFor, type Cluster, type Site } from '../../agent/demo/local-cluster.js'
import type { AgentStatus, TreeStatus } from '../../agent/api/api.js'
import type { AgentEvent } from '../../agent/api/events.js'
import type { DashboardSnapshot } from '../../agent/dashboard/snapshot.js'
import { treeCommands } from '../helpers/tree-commands.js'
import { clusterPerTest } from '../helpers/cluster.js'

// Reacting to new versions (issue 22) with real agents on 127.0.0.1: a subscription's gate decides whether a
// complete version is exposed, a post-version command follows each flip (coalesced), the event stream shows a
// sync from announcement to flip, and `diff` lists what a publish changed, from the manifests.

const TREE = 'lab/compose/BaseOS'
const { publish, syncDone } = treeCommands(TREE)
const clusters = clusterPerTest()

interface Lab { c: Cluster, origin: Site, lab: Site, source: string, mirror: string, out: string }

async function start (): Promise<Lab> {
  const c = await clusters.create('deltamesh-react-')
  const source = join(c.dir, 'source')
  await mkdir(join(source, 'Packages'), { recursive: true })
  await writeFile(join(source, 'Packages', 'a.rpm'), 'a v1\n')
  await writeFile(join(source, 'Packages', 'b.rpm'), 'b v1\n')
  await writeFile(join(source, 'Packages', 'c.rpm'), 'c v1\n')
  await writeFile(join(source, 'repomd.xml'), '<repomd v1/>\n')
  const out = join(c.dir, 'out')
  await mkdir(out)
  const origin = await c.addSite('origin')
  const lab = await c.addSite('lab')
  await c.wire(TREE, origin)
  for (const s of c.sites) await c.start(s)
  return { c, origin, lab, source, mirror: join(c.dir, 'lab-mirror'), out }
}

/** v2 of the source: one file edited, one removed, one added, one made executable. */
async function changeSource (source: string): Promise<void> {
  await writeFile(join(source, 'Packages', 'a.rpm'), 'a v2, longer\n')
  await rm(join(source, 'Packages', 'b.rpm'))
  await writeFile(join(source, 'Packages', 'd.rpm'), 'd v2\n')
  await chmod(join(source, 'Packages', 'c.rpm'), 0o755)
}
const V2_CHANGES = ['changed\tPackages/a.rpm', 'removed\tPackages/b.rpm', 'mode-changed\tPackages/c.rpm', 'added\tPackages/d.rpm']

/** An executable script in OUT (commands run without a shell: a script is how a test suite is usually run). */
async function script (out: string, name: string, body: string): Promise<string> {
  const path = join(out, name)
  await writeFile(path, `#!/bin/sh\n${body}\n`, { mode: 0o755 })
  return path
}

/** Records what a command is given: its environment (DELTAMESH_*), its directory and its changes file. */
const RECORD = (out: string, hook: string): string =>
  `env | grep '^DELTAMESH_' | sort > "${out}/${hook}-$DELTAMESH_SEQ.env"; pwd > "${out}/${hook}-$DELTAMESH_SEQ.pwd"; cp "$DELTAMESH_CHANGES" "${out}/${hook}-$DELTAMESH_SEQ.changes"`

async function envOf (file: string): Promise<Record<string, string>> {
  const text = await readFile(file, 'utf8')
  return Object.fromEntries(text.trim().split('\n').map(l => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]))
}

async function treeStatus (site: Site): Promise<TreeStatus> {
  const status = JSON.parse(await cliOk(['status', '--home', site.home, '--json'])) as AgentStatus
  const t = status.trees.find(x => x.name === TREE)
  if (t === undefined) throw new Error(`${site.name}: no ${TREE} in status`)
  return t
}

const versionDir = (site: Site, seq: number): string => join(site.home, 'trees', 'lab%compose%BaseOS', 'versions', String(seq))
const exists = async (path: string): Promise<boolean> => await readFile(path).then(() => true, () => false)

/** `deltamesh events --json` as a process; its lines as they come. */
function followEvents (site: Site, ...args: string[]): { events: AgentEvent[], stop: () => Promise<void> } {
  const child = spawn(process.execPath, [CLI, 'events', '--home', site.home, '--json', ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  const events: AgentEvent[] = []
  let buffered = ''
  child.stdout.on('data', (d: Buffer) => {
    buffered += d.toString()
    let nl: number
    while ((nl = buffered.indexOf('\n')) >= 0) { events.push(JSON.parse(buffered.slice(0, nl)) as AgentEvent); buffered = buffered.slice(nl + 1) }
  })
  return {
    events,
    stop: async () => {
      const exited = new Promise<number | null>(resolve => child.once('exit', code => { resolve(code) }))
      child.kill('SIGTERM')
      expect(await exited).toBe(0)
    },
  }
}

describe('reacting to new versions (real agents)', () => {
  it('a gate that passes flips the path; one that fails keeps the previous version served, shows in status and events, and accept exposes it', async () => {
    const { c, origin, lab, source, mirror, out } = await start()
    const gate = await script(out, 'gate.sh', `${RECORD(out, 'gate')}\nif [ -e "${out}/broken" ]; then echo "checking closure"; echo "nothing provides libfoo.so.2 needed by d.rpm"; exit 3; fi\necho closure ok`)
    await cliOk(['subscribe', '--home', lab.home, TREE, '--to', mirror, '--gate', gate])
    await syncDone(lab, await publish(origin, source, 'compose-1'))
    expect(await readlink(mirror)).toBe(versionDir(lab, 1))
    expect(await envOf(join(out, 'gate-1.env'))).toEqual({
      DELTAMESH_CHANGES: join(lab.home, 'trees', 'lab%compose%BaseOS', 'changes', '1-from-none'), DELTAMESH_HOOK: 'gate', DELTAMESH_LABEL: 'compose-1',
      DELTAMESH_PATH: mirror, DELTAMESH_SEQ: '1', DELTAMESH_STAGED_PATH: versionDir(lab, 1), DELTAMESH_TREE: TREE,
    })
    expect((await readFile(join(out, 'gate-1.pwd'), 'utf8')).trim()).toBe(versionDir(lab, 1))
    expect((await readFile(join(out, 'gate-1.changes'), 'utf8')).split('\n')).toContain('added\tPackages/a.rpm')

    // v2 breaks the closure: refused, v1 stays served
    const events = followEvents(lab, '--tree', TREE)
    await waitFor('the event stream', async () => events.events.length > 0, 20_000)
    await writeFile(join(out, 'broken'), '')
    await changeSource(source)
    const seq2 = await publish(origin, source, 'compose-2')
    const sync = await runCli(['sync', '--home', lab.home, TREE, '--seq', String(seq2), '--timeout', '60'], { timeoutMs: 90_000 })
    expect(sync.code).toBe(1)
    expect(sync.stderr).toContain('GateRefusedError')
    expect(sync.stderr).toContain(`deltamesh accept ${TREE} ${seq2}`)
    expect(await readlink(mirror)).toBe(versionDir(lab, 1))
    expect(await readFile(join(mirror, 'Packages', 'b.rpm'), 'utf8')).toBe('b v1\n')
    // the gate saw the staged version and the one served, and what changed between them
    const env2 = await envOf(join(out, `gate-${seq2}.env`))
    expect(env2).toMatchObject({ DELTAMESH_STAGED_PATH: versionDir(lab, seq2), DELTAMESH_CURRENT_PATH: versionDir(lab, 1), DELTAMESH_CURRENT_SEQ: '1', DELTAMESH_LABEL: 'compose-2' })
    expect((await readFile(join(out, `gate-${seq2}.changes`), 'utf8')).trim().split('\n')).toEqual(V2_CHANGES)

    const t = await treeStatus(lab)
    expect(t).toMatchObject({ currentSeq: 1, newestSeq: seq2, gate: { argv: [gate], timeoutMs: 600_000 } })
    expect(t.gateRefused).toMatchObject({ seq: seq2, outcome: 'refused', reason: 'exit code 3', exitCode: 3, currentSeq: 1, output: ['checking closure', 'nothing provides libfoo.so.2 needed by d.rpm'] })
    expect(t.hooks).toMatchObject({ gateRuns: 2, gateRefusals: 1 })
    expect(t.versions.find(v => v.seq === seq2)).toMatchObject({ state: 'complete', gate: { outcome: 'refused' } })
    expect(await cliOk(['status', '--home', lab.home])).toContain('nothing provides libfoo.so.2')
    const url = (JSON.parse(await cliOk(['status', '--home', lab.home, '--json'])) as AgentStatus).dashboard!.url
    const snapshot = await (await fetch(new URL('/api/snapshot', url))).json() as DashboardSnapshot
    expect(snapshot.trees.find(x => x.name === TREE)?.gateRefused).toMatchObject({ seq: seq2, reason: 'exit code 3' })
    expect(snapshot.events.some(e => e.type === 'gate-refused' && e.seq === seq2)).toBe(true)
    await waitFor('gate-refused in the event stream', async () => events.events.some(e => e.type === 'gate-refused'), 10_000)
    expect(events.events.find(e => e.type === 'gate-refused')).toMatchObject({ tree: TREE, seq: seq2, reason: 'exit code 3', exitCode: 3, output: ['checking closure', 'nothing provides libfoo.so.2 needed by d.rpm'] })
    expect(events.events.some(e => e.type === 'path-flipped' && e.seq === seq2)).toBe(false)

    // the refused version is held and served to peers: a third site gets it from the lab alone
    // (the origin is stopped), although the lab does not expose it
    await c.stop(origin)
    const third = await c.addSite('third')
    await cliOk(['peers', 'add', '--home', third.home, '--name', 'lab', lab.multiaddr])
    await cliOk(['peers', 'add', '--home', lab.home, '--name', 'third', third.multiaddr])
    await cliOk(['trust', '--home', third.home, TREE, origin.publisherKey])
    await c.start(third)
    await cliOk(['subscribe', '--home', third.home, TREE, '--to', join(c.dir, 'third-mirror')])
    await syncDone(third, seq2, 60)
    expect(await readFile(join(c.dir, 'third-mirror', 'Packages', 'd.rpm'), 'utf8')).toBe('d v2\n')

    // by hand: accept exposes it
    expect(await cliOk(['accept', '--home', lab.home, TREE, String(seq2)])).toContain(`accepted ${TREE}@${seq2}`)
    expect(await readlink(mirror)).toBe(versionDir(lab, seq2))
    expect(await readFile(join(mirror, 'Packages', 'd.rpm'), 'utf8')).toBe('d v2\n')
    const after = await treeStatus(lab)
    expect(after.currentSeq).toBe(seq2)
    expect(after.gateRefused).toBeUndefined()
    expect(after.versions.find(v => v.seq === seq2)?.gate?.outcome).toBe('accepted')
    await waitFor('the flip in the event stream', async () => events.events.some(e => e.type === 'path-flipped' && e.seq === seq2), 10_000)
    await events.stop()
    // accepting again, or a version the gate did not refuse, is an error that says why
    const again = await runCli(['accept', '--home', lab.home, TREE, String(seq2)])
    expect(again.code).toBe(1)
    expect(again.stderr).toContain('was not refused by a gate: it is the version served')
  })

  it('a gate past its deadline is killed and the version refused', async () => {
    const { c, origin, lab, source, mirror, out } = await start()
    const gate = await script(out, 'slow-gate.sh', `[ "$DELTAMESH_SEQ" = 1 ] && exit 0\necho "running the long suite"\nsleep 30\necho "never printed" > "${out}/slow-gate-finished"`)
    await cliOk(['subscribe', '--home', lab.home, TREE, '--to', mirror, '--gate', gate, '--gate-timeout', '1'])
    await syncDone(lab, await publish(origin, source, 'v1'))
    await changeSource(source)
    const seq2 = await publish(origin, source, 'v2')
    const started = Date.now()
    const sync = await runCli(['sync', '--home', lab.home, TREE, '--seq', String(seq2), '--timeout', '60'], { timeoutMs: 90_000 })
    expect(sync.code).toBe(1)
    expect(sync.stderr).toContain('timed out after 1 s')
    expect(Date.now() - started).toBeLessThan(20_000)
    expect((await treeStatus(lab)).gateRefused).toMatchObject({ seq: seq2, output: ['running the long suite'] })
    expect(await readlink(mirror)).toBe(versionDir(lab, 1))
    await sleep(1_000)
    expect(await exists(join(out, 'slow-gate-finished'))).toBe(false)
    // a restart changes nothing: the refusal is recorded with the version, which is neither synced nor gated again
    await c.stop(lab)
    await c.start(lab)
    await sleep(2_000)
    const t = await treeStatus(lab)
    expect(t).toMatchObject({ currentSeq: 1, newestSeq: seq2, gateRefused: { seq: seq2, output: ['running the long suite'] } })
    expect(t.hooks).toMatchObject({ gateRuns: 0 })
    expect(await readlink(mirror)).toBe(versionDir(lab, 1))
  })

  it('--on-version gets the environment and change list; two quick versions during a slow run make it run once more, not twice', async () => {
    const { origin, lab, source, mirror, out } = await start()
    // each run records what it was given, then waits for the test's release (at most 60 s)
    const hook = await script(out, 'on-version.sh', `${RECORD(out, 'on')}\necho "start $DELTAMESH_SEQ" >> "${out}/runs"\ni=0; while [ ! -e "${out}/release-$DELTAMESH_SEQ" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done\necho "end $DELTAMESH_SEQ" >> "${out}/runs"`)
    await cliOk(['subscribe', '--home', lab.home, TREE, '--to', mirror, '--on-version', `${hook} --flag "two words"`])
    const runs = async (): Promise<string[]> => (await readFile(join(out, 'runs'), 'utf8').catch(() => '')).trim().split('\n').filter(l => l !== '')
    await syncDone(lab, await publish(origin, source, 'v1'))
    await waitFor('the first run', async () => (await runs()).includes('start 1'), 20_000)
    const env1 = await envOf(join(out, 'on-1.env'))
    expect(env1).toEqual({
      DELTAMESH_CHANGES: join(lab.home, 'trees', 'lab%compose%BaseOS', 'changes', '1-from-none'), DELTAMESH_CURRENT_PATH: versionDir(lab, 1), DELTAMESH_HOOK: 'on-version',
      DELTAMESH_LABEL: 'v1', DELTAMESH_PATH: mirror, DELTAMESH_SEQ: '1', DELTAMESH_STAGED_PATH: versionDir(lab, 1), DELTAMESH_TREE: TREE,
    })
    expect((await readFile(join(out, 'on-1.changes'), 'utf8')).trim().split('\n')).toEqual(['added\tPackages', 'added\tPackages/a.rpm', 'added\tPackages/b.rpm', 'added\tPackages/c.rpm', 'added\trepomd.xml'])

    // v2 and v3 arrive while the run for v1 still runs: not blocked by it, and coalesced into one run for v3
    await changeSource(source)
    await syncDone(lab, await publish(origin, source, 'v2'))
    await writeFile(join(source, 'repomd.xml'), '<repomd v3/>\n')
    const seq3 = await publish(origin, source, 'v3')
    await syncDone(lab, seq3)
    expect(await readlink(mirror)).toBe(versionDir(lab, seq3))
    expect((await treeStatus(lab)).hooks).toMatchObject({ onVersionRunning: 1, onVersionCoalesced: 1 })
    await writeFile(join(out, 'release-1'), '')
    await waitFor(`the run for v${seq3}`, async () => (await runs()).includes(`start ${seq3}`), 20_000)
    await writeFile(join(out, `release-${seq3}`), '')
    await waitFor(`the end of the run for v${seq3}`, async () => (await runs()).includes(`end ${seq3}`), 20_000)
    await sleep(500)
    expect(await runs()).toEqual(['start 1', 'end 1', `start ${seq3}`, `end ${seq3}`])
    // the coalesced run's changes span every version it stands for (v1 → v3)
    expect(await envOf(join(out, `on-${seq3}.env`))).toMatchObject({ DELTAMESH_SEQ: String(seq3), DELTAMESH_PREVIOUS_SEQ: '1', DELTAMESH_PREVIOUS_PATH: versionDir(lab, 1), DELTAMESH_CURRENT_PATH: versionDir(lab, seq3) })
    expect((await readFile(join(out, `on-${seq3}.changes`), 'utf8')).trim().split('\n').sort()).toEqual([...V2_CHANGES, 'changed\trepomd.xml'].sort())
    const t = await treeStatus(lab)
    expect(t.onVersion).toEqual({ argv: [hook, '--flag', 'two words'], timeoutMs: 3_600_000 })
    expect(t.hooks).toMatchObject({ onVersionRuns: 2, onVersionFailures: 0, onVersionCoalesced: 1, lastOnVersion: { seq: seq3, ok: true } })
  })

  it('events --json shows the whole sequence of one sync in order; diff lists what the publish changed', async () => {
    const { origin, lab, source, mirror, out } = await start()
    const gate = await script(out, 'gate.sh', 'exit 0')
    const hook = await script(out, 'hook.sh', 'exit 0')
    await cliOk(['subscribe', '--home', lab.home, TREE, '--to', mirror, '--gate', gate, '--on-version', hook])
    await syncDone(lab, await publish(origin, source, 'v1'))
    const events = followEvents(lab)
    await waitFor('the event stream', async () => events.events.length > 0, 20_000)
    await changeSource(source)
    const seq2 = await publish(origin, source, 'v2')
    await syncDone(lab, seq2)
    await waitFor('on-version-done', async () => events.events.some(e => e.type === 'on-version-done' && e.seq === seq2), 20_000)
    await events.stop()
    const mine = events.events.filter(e => e.tree === TREE && (e.seq === seq2 || e.type === 'following'))
    const types = mine.map(e => e.type).filter((t, i, all) => t !== 'sync-progress' || all[i - 1] !== 'sync-progress')
    expect(types).toEqual(['version-announced', 'version-admitted', 'sync-started', 'sync-progress', 'gate-started', 'gate-passed', 'sync-complete', 'path-flipped', 'on-version-started', 'on-version-done'])
    expect(events.events[0]).toMatchObject({ type: 'following' })
    for (let i = 1; i < events.events.length; i++) expect(events.events[i]!.timeMs).toBeGreaterThanOrEqual(events.events[i - 1]!.timeMs)
    expect(mine.every(e => !Number.isNaN(Date.parse(e.time)))).toBe(true)
    expect(mine.find(e => e.type === 'gate-started')?.changes).toEqual({ added: 1, removed: 1, changed: 1, 'mode-changed': 1 })
    expect(mine.find(e => e.type === 'path-flipped')).toMatchObject({ previousSeq: 1, path: mirror })
    expect(mine.find(e => e.type === 'sync-complete')!.bytesFetched).toBeGreaterThan(0)

    // diff, through the running agent: by default the previous and the current version
    const diff = await runCli(['diff', '--home', lab.home, TREE])
    expect(diff.code).toBe(0)
    expect(diff.stdout.trim().split('\n')).toEqual(V2_CHANGES)
    expect(diff.stderr).toContain(`v1 → v${seq2}: 1 added, 1 removed, 1 changed, 1 mode-changed`)
    const json = (await cliOk(['diff', '--home', lab.home, TREE, '1', String(seq2), '--json'])).trim().split('\n').map(l => JSON.parse(l) as Record<string, unknown>)
    expect(json.at(-1)).toEqual({ summary: { tree: TREE, from: 1, to: seq2, counts: { added: 1, removed: 1, changed: 1, 'mode-changed': 1 } } })
    expect(json[2]).toEqual({ change: 'mode-changed', path: 'Packages/c.rpm', type: 'file', fromMode: 0o644, toMode: 0o755 })
    // and from the store when no agent runs (at the publisher: its own versions), in the other direction
    const backwards = await runCli(['diff', '--home', origin.home, TREE, String(seq2), '1'])
    expect(backwards.stdout.trim().split('\n')).toEqual(['changed\tPackages/a.rpm', 'added\tPackages/b.rpm', 'mode-changed\tPackages/c.rpm', 'removed\tPackages/d.rpm'])
    const unknown = await runCli(['diff', '--home', lab.home, TREE, '1', '99'])
    expect(unknown.code).toBe(1)
    expect(unknown.stderr).toContain('version 99 is not known here')
  })
})

