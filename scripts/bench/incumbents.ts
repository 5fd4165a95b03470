// The incumbents, each driven the way an operator would: an rsync daemon on 127.0.0.1 with `--stats`
// clients, casync with its chunk store served over HTTP and v1 as the seed, zsync against an HTTP origin.
// Byte counts are what each tool (or our HTTP origin) says went over its sockets.
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdir, symlink, writeFile } from 'node:fs/promises'
import { connect } from 'node:net'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { childrenOf, cpuOf, peakRssMiB, RssSampler, sleep, timed, track, type Timed } from './proc.js'

export async function waitListening (port: number, child: ChildProcess, what: string): Promise<void> {
  const deadline = Date.now() + 10_000
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${what} exited ${child.exitCode}`)
    const up = await new Promise<boolean>(resolveUp => {
      const s = connect(port, '127.0.0.1', () => { s.destroy(); resolveUp(true) })
      s.on('error', () => resolveUp(false))
    })
    if (up) return
    if (Date.now() > deadline) throw new Error(`${what} did not listen on 127.0.0.1:${port}`)
    await sleep(50)
  }
}

// ---------------------------------------------------------------------------------------------------------
// rsync

export interface RsyncDaemon { pid: number, port: number, child: ChildProcess }

export async function startRsyncDaemon (dir: string, module: string, port: number): Promise<RsyncDaemon> {
  const conf = join(dir, 'rsyncd.conf')
  const uid = process.getuid?.() ?? 0
  const gid = process.getgid?.() ?? 0
  await writeFile(conf, [
    'use chroot = no', 'max connections = 0', `log file = ${join(dir, 'rsyncd.log')}`, 'transfer logging = no',
    // as root the daemon would switch to nobody, who may not read the cache: stay who we are
    ...(uid === 0 ? [`uid = ${uid}`, `gid = ${gid}`] : []),
    '[bench]', `  path = ${module}`, '  read only = yes', '',
  ].join('\n'))
  const child = track(spawn('rsync', ['--daemon', '--no-detach', `--config=${conf}`, '--address=127.0.0.1', `--port=${port}`], { stdio: ['ignore', 'ignore', 'pipe'] }))
  let stderr = ''
  child.stderr?.on('data', (d: Buffer) => { stderr += d.toString() })
  await waitListening(port, child, 'rsync daemon').catch((err: Error) => { throw new Error(`${err.message}: ${stderr}`) })
  return { pid: child.pid as number, port, child }
}

export interface RsyncRound {
  clients: Array<{ sent: number, received: number, wall: number, cpu: number, rssMiB: number }>
  wall: number
  daemonCpu: number
  daemonRssMiB: number
}

export function statNumber (text: string, label: string): number {
  const m = new RegExp(`${label}: ([\\d,.]+)`).exec(text)
  if (m === null) throw new Error(`rsync --stats output has no "${label}":\n${text}`)
  return Number((m[1] as string).replaceAll(',', ''))
}

/** Concurrent `rsync -a --delete --stats [extra] rsync://…/bench/ DEST/`; daemon CPU includes its reaped per-connection children. */
export async function rsyncRound (daemon: RsyncDaemon, dests: string[], extra: string[]): Promise<RsyncRound> {
  const before = cpuOf(daemon.pid)
  const rss = new RssSampler(daemon.pid)
  const t0 = performance.now()
  const clients = await Promise.all(dests.map(async dest => {
    const r: Timed = await timed('rsync', ['-a', '--delete', '--stats', ...extra, `rsync://127.0.0.1:${daemon.port}/bench/`, `${dest}/`])
    return { sent: statNumber(r.stdout, 'Total bytes sent'), received: statNumber(r.stdout, 'Total bytes received'), wall: r.wall, cpu: r.cpu, rssMiB: r.rssMiB }
  }))
  const wall = (performance.now() - t0) / 1000
  const deadline = Date.now() + 10_000
  while (childrenOf(daemon.pid).length > 0 && Date.now() < deadline) await sleep(50)
  await sleep(100)
  const after = cpuOf(daemon.pid)
  return { clients, wall, daemonCpu: (after.self + after.children) - (before.self + before.children), daemonRssMiB: rss.stop() }
}

/** rsync's "nothing to do" pass: a dry run of the source against an identical copy. */
export async function rsyncDryRun (source: string, dest: string): Promise<Timed> {
  return await timed('rsync', ['-a', '--delete', '--dry-run', '--stats', `${source}/`, `${dest}/`])
}

// ---------------------------------------------------------------------------------------------------------
// HTTP origin (scripts/bench/http-serve.ts in a process of its own)

export interface HttpOrigin { port: number, pid: number, child: ChildProcess, stats: () => Promise<{ bytes: number, requests: number }>, cpu: () => number, rssMiB: () => number }

export async function startHttpOrigin (root: string): Promise<HttpOrigin> {
  const script = join(dirname(fileURLToPath(import.meta.url)), 'http-serve.js')
  const child = track(spawn(process.execPath, [script, resolve(root)], { stdio: ['ignore', 'pipe', 'inherit'] }))
  const port = await new Promise<number>((resolvePort, reject) => {
    child.stdout?.once('data', (d: Buffer) => resolvePort(Number(d.toString().trim())))
    child.once('exit', code => reject(new Error(`http origin exited ${code}`)))
  })
  const pid = child.pid as number
  return {
    port, pid, child,
    stats: async () => await (await fetch(`http://127.0.0.1:${port}/__bench/stats`)).json() as { bytes: number, requests: number },
    cpu: () => cpuOf(pid).self,
    rssMiB: () => peakRssMiB(pid),
  }
}

// ---------------------------------------------------------------------------------------------------------
// casync: `make` into a store (the publish step), `extract` over HTTP with v1 as the seed

export interface CasyncRun { make: Timed, extract: Timed, bytes: number, requests: number, originCpu: number }

/** `blob`: an image (caibx); otherwise a directory tree (caidx). */
export async function casyncRound (work: string, v1: string, v2: string, dest: string, blob: boolean): Promise<CasyncRun> {
  const store = join(work, 'casync')
  const index = join(store, blob ? 'v2.caibx' : 'v2.caidx')
  await mkdir(store, { recursive: true })
  const make = await timed('casync', ['make', `--store=${join(store, 'default.castr')}`, index, v2])
  const origin = await startHttpOrigin(store)
  try {
    const base = `http://127.0.0.1:${origin.port}`
    const cpu0 = origin.cpu()
    const extract = await timed('casync', ['extract', `--store=${base}/default.castr`, `--seed=${v1}`, `${base}/${blob ? 'v2.caibx' : 'v2.caidx'}`, dest])
    const s = await origin.stats()
    return { make, extract, bytes: s.bytes, requests: s.requests, originCpu: origin.cpu() - cpu0 }
  } finally {
    origin.child.kill('SIGTERM')
  }
}

// ---------------------------------------------------------------------------------------------------------
// zsync: the origin publishes v2's image and its .zsync; the client has v1's image

export interface ZsyncRun { make: Timed, fetch: Timed, bytes: number, requests: number, originCpu: number }

export async function zsyncRound (work: string, v1File: string, v2File: string, out: string): Promise<ZsyncRun> {
  const name = 'repo.iso'
  const control = join(work, `${name}.zsync`)
  const make = await timed('zsyncmake', ['-u', name, '-o', control, v2File])
  await symlink(v2File, join(work, name))
  const origin = await startHttpOrigin(work)
  try {
    const cpu0 = origin.cpu()
    const fetched = await timed('zsync', ['-q', '-i', v1File, '-o', out, `http://127.0.0.1:${origin.port}/${name}.zsync`], { cwd: dirname(out) })
    const s = await origin.stats()
    return { make, fetch: fetched, bytes: s.bytes, requests: s.requests, originCpu: origin.cpu() - cpu0 }
  } finally {
    origin.child.kill('SIGTERM')
  }
}
