// deltamesh's side of a corpus round: real agents (Cluster: one process each, libp2p on 127.0.0.1, LevelDB)
// — a publisher, one subscriber alone (wire bytes, publisher cost for 1), then 4 subscribers at once with
// their downlinks limited (publisher cost for 4, wall time). Every subscriber's tree is checked against v2.
import { appendFile, rename, symlink } from 'node:fs/promises'
import { join } from 'node:path'
import { connectAgent, type ControlClient } from '../../agent/control/client.js'
import type { AgentStatus, PublishSummary } from '../../agent/api/api.js'
import { Cluster, cliOk, type Site } from '../../agent/demo/local-cluster.js'
import { editConfig } from '../../agent/demo/config-edit.js'
import type { ChunkSizeName } from '../../protocol/chunking.js'
import { HomeLayout } from '../../agent/core/home.js'
import { cpuOf, peakRssMiB } from './proc.js'
import { TcpMeter } from './tcp.js'

export const TREE = 'bench/corpus'
/** Agents share 2 cores with the rest of the run (and other engineers' tests): 30 s to come up was not always enough. */
export const AGENT_START_MS = 180_000

export async function api (site: Site): Promise<ControlClient> {
  const client = await connectAgent(new HomeLayout(site.home))
  if (client === undefined) throw new Error(`agent ${site.name} is not answering`)
  return client
}

/**
 * Every site lists every other and trusts the publisher. Peers are appended to config.toml directly (the
 * [[peers]] table `deltamesh peers add` writes): 17 sites would take 272 CLI runs.
 */
export async function wireAll (sites: Site[], publisher: Site): Promise<void> {
  for (const a of sites) {
    const blocks = sites.filter(b => b !== a).map(b => `\n[[peers]]\naddr = ${JSON.stringify(b.multiaddr)}\nname = ${JSON.stringify(b.name)}\n`)
    await appendFile(join(a.home, 'config.toml'), blocks.join(''))
    await cliOk(['trust', '--home', a.home, TREE, publisher.publisherKey])
  }
}

export async function waitSeq (sites: Site[], seq: number, timeoutMs: number): Promise<number[]> {
  const t0 = performance.now()
  return await Promise.all(sites.map(async s => {
    await (await api(s)).waitForSync(TREE, { minSeq: seq, signal: AbortSignal.timeout(timeoutMs) })
    return (performance.now() - t0) / 1000
  }))
}

/** Points the publisher's source at a version: a symlink flip, so files unchanged between versions keep inode, size, mtime and ctime and the scan cache holds (a mirror updated in place). */
export async function pointSource (source: string, target: string): Promise<void> {
  await symlink(target, `${source}.next`)
  await rename(`${source}.next`, source)
}

export interface DeltameshFigures {
  firstPublish: { wall: number, cpu: number, summary: PublishSummary }
  /** Setup: publish v1 → all 5 subscribers hold it (each from its own copy of v1: subscribe --seed). */
  initialSyncWall: number
  publish: { wall: number, cpu: number, summary: PublishSummary }
  rescan: { wall: number, summary: PublishSummary }
  one: { framesDown: number, tcpDown: number, tcpUp: number, wall: number, pubUp: number, pubTcpUp: number, pubServeCpu: number, cpu: number, rssMiB: number }
  four: { framesDown: number[], wall: number, pubUp: number, pubTcpUp: number, pubServeCpu: number, rssMiB: number }
  publisherRssMiB: number
  mirrors: { one: string, four: string[] }
  /** What the agents' own logs say about the v2 round with one subscriber: deltas computed, used, the plan. */
  notes: string[]
}

/** Log lines (pino JSON) of these messages logged since `sinceMs`, each shortened to its message and numbers. */
function logNotes (site: Site, messages: string[], sinceMs: number): string[] {
  const out: string[] = []
  for (const line of site.log.split('\n')) {
    if (!line.startsWith('{')) continue
    let rec: Record<string, unknown>
    try { rec = JSON.parse(line) as Record<string, unknown> } catch { continue }
    if (typeof rec.msg !== 'string' || !messages.includes(rec.msg) || typeof rec.time !== 'number' || rec.time < sinceMs) continue
    const { level: _l, time: _t, pid: _p, tree: _tr, peer: _pe, root: _r, msg, ...rest } = rec
    out.push(`${site.name}: ${msg} ${JSON.stringify(rest)}`)
  }
  return out
}

const counters = (s: AgentStatus): AgentStatus['counters'] => s.counters

/**
 * `downLimit` applies to the 4 subscribers of the second round. `check` throws when a mirror is not v2 (before
 * the rescan, which publishes a seq 3 the subscribers then pull).
 * Agents are stopped by `cluster.cleanup()` (the caller owns the cluster, for Ctrl-C).
 */
export async function deltameshRounds (cluster: Cluster, work: string, v1: string, v2: string, downLimit: string, timeoutMs: number,
  log: (s: string) => void, check: (what: string, dir: string) => Promise<void>, chunkSize: ChunkSizeName = '52KiB'): Promise<DeltameshFigures> {
  const pub = await cluster.addSite('publisher')
  const solo = await cluster.addSite('solo')
  const four: Site[] = []
  for (let i = 1; i <= 4; i++) four.push(await cluster.addSite(`sub-${i}`))
  const subs = [solo, ...four]
  await wireAll([pub, ...subs], pub)
  for (const s of four) await editConfig(new HomeLayout(s.home).config, { limits: { down: downLimit } })
  // the publisher's [chunking] (agent/chunk/sizes.ts): subscribers need no setting, the manifest says it
  if (chunkSize !== '52KiB') await editConfig(new HomeLayout(pub.home).config, { chunking: { average: chunkSize } })
  // all at once: one by one, each waiting for the others' dials and gossip, took 15–20 s an agent on a busy machine
  // info for the two agents of the measured round: their logs say whether deltas were computed and used
  await Promise.all([pub, ...subs].map(async s => { await cluster.start(s, { DELTAMESH_LOG_LEVEL: s === pub || s === solo ? 'info' : 'warn' }, [], AGENT_START_MS) }))
  const mirrors = { one: join(cluster.dir, 'solo-mirror'), four: four.map(s => join(cluster.dir, `${s.name}-mirror`)) }
  // Each subscriber starts from its own copy of v1 (subscribe --seed, copied: the cached corpus's inodes stay
  // untouched, so the publisher's scan cache holds), as the rsync clients start from theirs: the v1 setup
  // is not what is measured, and 5 subscribers × 200,000 small files pulled from nothing took longer than
  // the whole run may. The v2 round is the same either way: each subscriber holds v1 as a version of its own.
  for (const s of subs) await (await api(s)).subscribe({ tree: TREE, to: s === solo ? mirrors.one : mirrors.four[four.indexOf(s)] as string, seed: v1, seedCopy: true })
  const source = join(work, 'source')
  await pointSource(source, v1)
  const pubPid = pub.process?.pid as number
  const pubApi = await api(pub)

  log('deltamesh: first publish (v1); 5 subscribers take it from their copies of v1 (--seed; setup, not measured beyond the publish)')
  let c0 = cpuOf(pubPid).self
  let t0 = performance.now()
  const firstSummary = await pubApi.publish({ tree: TREE, source, label: 'v1' })
  const firstPublish = { wall: (performance.now() - t0) / 1000, cpu: cpuOf(pubPid).self - c0, summary: firstSummary }
  await waitSeq(subs, firstSummary.seq, timeoutMs)
  const initialSyncWall = (performance.now() - t0) / 1000
  for (const s of four) await cluster.stop(s, 'SIGTERM')

  log('deltamesh: publish v2, one subscriber syncs')
  await pointSource(source, v2)
  const logSince = Date.now()
  const st0 = await Promise.all([pub, solo].map(async s => await (await api(s)).status()))
  const meter = new TcpMeter(new Set([pubPid, solo.process?.pid as number]))
  const soloPid = solo.process?.pid as number
  const soloCpu0 = cpuOf(soloPid).self
  c0 = cpuOf(pubPid).self
  t0 = performance.now()
  const summary = await pubApi.publish({ tree: TREE, source, label: 'v2' })
  const publish = { wall: (performance.now() - t0) / 1000, cpu: cpuOf(pubPid).self - c0, summary }
  const c1 = cpuOf(pubPid).self
  await waitSeq([solo], summary.seq, timeoutMs)
  const oneWall = (performance.now() - t0) / 1000
  const c2 = cpuOf(pubPid).self
  const tcp = meter.stop()
  const st1 = await Promise.all([pub, solo].map(async s => await (await api(s)).status()))
  const d = (i: number, k: keyof AgentStatus['counters']): number => counters(st1[i] as AgentStatus)[k] - counters(st0[i] as AgentStatus)[k]
  const one = {
    framesDown: d(1, 'bytesDown'), tcpDown: tcp.perPid.get(solo.process?.pid as number)?.received ?? NaN, tcpUp: tcp.perPid.get(solo.process?.pid as number)?.sent ?? NaN,
    wall: oneWall, pubUp: d(0, 'bytesUp'), pubTcpUp: tcp.perPid.get(pubPid)?.sent ?? NaN, pubServeCpu: c2 - c1, cpu: cpuOf(soloPid).self - soloCpu0, rssMiB: peakRssMiB(soloPid),
  }
  const notes = [
    ...logNotes(pub, ['deltas computed', 'published'], logSince),
    ...logNotes(solo, ['manifest deltas', 'deltas', 'chunk deltas', 'planned'], logSince),
  ]
  await cluster.stop(solo, 'SIGTERM')
  await check('deltamesh subscriber (alone)', mirrors.one)

  log(`deltamesh: 4 subscribers (downlink ${downLimit} each) start and catch up to v2`)
  const pubBefore = counters(await pubApi.status())
  const pubMeter = new TcpMeter(new Set([pubPid]))
  const c3 = cpuOf(pubPid).self
  t0 = performance.now()
  // they learn v2 from the publisher's heads on connect; the time includes their start (~1 s)
  await Promise.all(four.map(async s => { await cluster.start(s, { DELTAMESH_LOG_LEVEL: 'warn' }, [], AGENT_START_MS) }))
  await waitSeq(four, summary.seq, timeoutMs)
  const fourWall = (performance.now() - t0) / 1000
  const c4 = cpuOf(pubPid).self
  const pubTcp = pubMeter.stop()
  const fourStatus = await Promise.all(four.map(async s => counters(await (await api(s)).status())))
  const fourOut = {
    framesDown: fourStatus.map(c => c.bytesDown), wall: fourWall, pubUp: counters(await pubApi.status()).bytesUp - pubBefore.bytesUp,
    pubTcpUp: pubTcp.perPid.get(pubPid)?.sent ?? NaN, pubServeCpu: c4 - c3, rssMiB: Math.max(...four.map(s => peakRssMiB(s.process?.pid as number))),
  }

  for (const [i, m] of mirrors.four.entries()) await check(`deltamesh subscriber ${i + 1} of 4`, m)

  log('deltamesh: rescan — publish the unchanged v2 again')
  t0 = performance.now()
  const again = await pubApi.publish({ tree: TREE, source, label: 'v2-again' })
  const rescan = { wall: (performance.now() - t0) / 1000, summary: again }
  return { firstPublish, initialSyncWall, publish, rescan, one, four: fourOut, publisherRssMiB: peakRssMiB(pubPid), mirrors, notes }
}
