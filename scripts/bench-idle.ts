// What an idle agent holds: two real agents (Cluster: one process each, libp2p on 127.0.0.1, LevelDB in a temp
// dir) that list each other as peers, both trusting one publisher for a tree the second one subscribes to.
// Nothing is published: after both are up and the subscription is made, each agent's /proc/PID/status is read
// at the given seconds: VmRSS (resident now), VmHWM (peak resident), RssAnon / RssFile (heap and stacks vs
// mapped code and libraries) and Threads (node's own ~11, libuv's pool once used, one per worker thread).
//
// Run: npm run build && npm run bench:idle -- [--seconds 1,10,60] [--node-arg A] [--json] [--keep]
import '../agent/polyfill.js'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { Cluster, cliOk, type Site } from '../agent/demo/local-cluster.js'
import { killStarted, sleep } from './bench/proc.js'

const TREE = 'bench/idle'
const START_MS = 120_000

interface Options { seconds: number[], nodeArgs: string[], json: boolean, keep: boolean }

function parseArgs (argv: string[]): Options {
  const o: Options = { seconds: [1, 10, 60], nodeArgs: [], json: false, keep: false }
  for (let i = 0; i < argv.length; i++) {
    const value = (): string => { const v = argv[++i]; if (v === undefined) throw new Error(`${argv[i - 1]} needs a value`); return v }
    switch (argv[i]) {
      case '--seconds': o.seconds = value().split(',').map(Number).sort((a, b) => a - b); break
      case '--node-arg': o.nodeArgs.push(value()); break
      case '--json': o.json = true; break
      case '--keep': o.keep = true; break
      case '--help':
        console.log([
          'options:',
          '  --seconds LIST  when to read /proc, in seconds after both agents are up and subscribed (default 1,10,60)',
          '  --node-arg A    an extra node option for both agents, repeatable (e.g. --max-semi-space-size=1)',
          '  --json          print the samples as one JSON line too',
          '  --keep          keep the temp dir',
        ].join('\n'))
        process.exit(0)
        break
      default: throw new Error(`unknown option ${argv[i]}`)
    }
  }
  if (o.seconds.length === 0 || o.seconds.some(s => !(s >= 0))) throw new Error('--seconds is a list of non-negative numbers')
  return o
}

export interface ProcMemory { rssMiB: number, hwmMiB: number, anonMiB: number, fileMiB: number, threads: number }

/** The memory figures of /proc/PID/status (MiB) and its thread count; undefined once the process is gone. */
export function procMemory (pid: number): ProcMemory | undefined {
  let text: string
  try { text = readFileSync(`/proc/${pid}/status`, 'utf8') } catch { return undefined }
  const field = (name: string): number => {
    const m = new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(text)
    return m === null ? NaN : Number(m[1])
  }
  const mib = (name: string): number => Math.round(field(name) / 1024 * 10) / 10
  return { rssMiB: mib('VmRSS'), hwmMiB: mib('VmHWM'), anonMiB: mib('RssAnon'), fileMiB: mib('RssFile'), threads: field('Threads') }
}

interface Sample { second: number, site: string, memory: ProcMemory }

async function setUp (cluster: Cluster, nodeArgs: string[]): Promise<Site[]> {
  const origin = await cluster.addSite('origin')
  const sub = await cluster.addSite('sub')
  await cluster.wire(TREE, origin)
  await Promise.all(cluster.sites.map(async s => await cluster.start(s, { DELTAMESH_LOG_LEVEL: 'warn' }, nodeArgs, START_MS)))
  await cliOk(['subscribe', '--home', sub.home, TREE, '--to', join(cluster.dir, 'sub-mirror')])
  return [origin, sub]
}

async function sampleAt (sites: Site[], seconds: number[]): Promise<Sample[]> {
  const t0 = performance.now()
  const samples: Sample[] = []
  for (const second of seconds) {
    await sleep(Math.max(0, t0 + second * 1000 - performance.now()))
    for (const site of sites) {
      const pid = site.process?.pid
      const memory = pid === undefined ? undefined : procMemory(pid)
      if (memory === undefined) throw new Error(`agent ${site.name} is gone:\n${site.log}`)
      samples.push({ second, site: site.name, memory })
    }
  }
  return samples
}

function report (samples: Sample[]): void {
  console.log('| after | agent | VmRSS MiB | VmHWM MiB | RssAnon | RssFile | threads |')
  console.log('| --- | --- | --- | --- | --- | --- | --- |')
  for (const s of samples) {
    const m = s.memory
    console.log(`| ${s.second} s | ${s.site} | ${m.rssMiB} | ${m.hwmMiB} | ${m.anonMiB} | ${m.fileMiB} | ${m.threads} |`)
  }
}

async function main (): Promise<void> {
  const options = parseArgs(process.argv.slice(2))
  const cluster = await Cluster.create('deltamesh-bench-idle-')
  const onSignal = (): void => { killStarted(); void cluster.cleanup().finally(() => process.exit(130)) }
  process.once('SIGINT', onSignal)
  try {
    const sites = await setUp(cluster, options.nodeArgs)
    console.log(`agents up and subscribed; reading /proc at ${options.seconds.join(', ')} s`)
    const samples = await sampleAt(sites, options.seconds)
    report(samples)
    if (options.json) console.log(JSON.stringify({ bench: 'idle', nodeArgs: options.nodeArgs, samples }))
  } finally {
    process.off('SIGINT', onSignal)
    await cluster.cleanup({ keepFiles: options.keep })
    if (options.keep) console.log(`kept ${cluster.dir}`)
  }
}

await main().catch(err => { console.error(err); process.exitCode = 1 })
