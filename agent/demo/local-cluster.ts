import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join, resolve, sep } from 'node:path'
import { fileURLToPath } from 'node:url'
import { ControlClient } from '../control/client.js'
import type { AgentStatus } from '../api/api.js'
import { HomeLayout } from '../core/home.js'
import { editConfig, type ConfigPatch } from './config-edit.js'

// A cluster of real agents on one machine: separate processes (the compiled CLI), real libp2p over TCP on
// 127.0.0.1, real LevelDB in temp dirs. Used by `deltamesh demo`, the end-to-end tests and the benchmarks.
// Everything started here is killed and removed by cleanup().

/** The compiled CLI, whether this module runs from dist/ or (under vitest) from the TypeScript source. */
function findCli (): string {
  const here = fileURLToPath(import.meta.url)
  const marker = `${sep}dist${sep}agent${sep}`
  const root = here.includes(marker) ? here.slice(0, here.indexOf(marker)) : resolve(dirname(here), '..', '..')
  return join(root, 'dist', 'agent', 'cli.js')
}
export const CLI = findCli()

export interface CliResult { code: number | null, stdout: string, stderr: string }

export async function freePort (): Promise<number> {
  return await new Promise((resolvePort, reject) => {
    const server = createServer()
    server.unref()
    server.on('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      const port = typeof address === 'object' && address !== null ? address.port : 0
      server.close(() => resolvePort(port))
    })
  })
}

export async function runCli (args: string[], options: { env?: NodeJS.ProcessEnv, timeoutMs?: number } = {}): Promise<CliResult> {
  return await new Promise((resolveRun, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, DELTAMESH_LOG_LEVEL: 'warn', ...options.env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 120_000)
    child.on('error', reject)
    child.on('close', code => { clearTimeout(timer); resolveRun({ code, stdout, stderr }) })
  })
}

export async function cliOk (args: string[], options?: { env?: NodeJS.ProcessEnv, timeoutMs?: number }): Promise<string> {
  const r = await runCli(args, options)
  if (r.code !== 0) throw new Error(`deltamesh ${args.join(' ')} exited ${r.code}\n${r.stderr}\n${r.stdout}`)
  return r.stdout
}

export interface Site {
  name: string
  home: string
  port: number
  peerId: string
  multiaddr: string
  publisherKey: string
  process?: ChildProcess
  log: string
}

export class Cluster {
  readonly sites: Site[] = []
  private constructor (readonly dir: string) {}

  static async create (prefix = 'deltamesh-e2e-'): Promise<Cluster> {
    return new Cluster(await mkdtemp(join(tmpdir(), prefix)))
  }

  async addSite (name: string): Promise<Site> {
    const home = join(this.dir, name)
    const port = await freePort()
    const out = await cliOk(['init', '--home', home, '--listen', `/ip4/127.0.0.1/tcp/${port}`, '--json'])
    const info = JSON.parse(out) as { peerId: string, multiaddrs: string[], publisherKey: string }
    // several agents share this host: each names itself and takes any free dashboard port (status shows it)
    await editConfig(new HomeLayout(home).config, { agent: { name }, dashboard: { listen: '127.0.0.1:0' } })
    const site: Site = { name, home, port, peerId: info.peerId, multiaddr: info.multiaddrs[0] as string, publisherKey: info.publisherKey, log: '' }
    this.sites.push(site)
    return site
  }

  /** Every site allows and dials every other; every site trusts `publisher` for `tree`. */
  async wire (tree: string, publisher: Site): Promise<void> {
    for (const a of this.sites) {
      for (const b of this.sites) if (a !== b) await cliOk(['peers', 'add', '--home', a.home, '--name', b.name, b.multiaddr])
      await cliOk(['trust', '--home', a.home, tree, publisher.publisherKey])
    }
  }

  /** Starts the site's agent; `nodeArgs` go to node itself (e.g. --cpu-prof for profiling); `timeoutMs`: a busy machine with many agents needs more. */
  async start (site: Site, env: NodeJS.ProcessEnv = {}, nodeArgs: string[] = [], timeoutMs = 30_000): Promise<void> {
    const child = spawn(process.execPath, [...nodeArgs, CLI, 'agent', '--home', site.home], { env: { ...process.env, DELTAMESH_LOG_LEVEL: 'info', ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    site.process = child
    const append = (d: Buffer): void => { site.log = (site.log + d.toString()).slice(-200_000) }
    child.stdout?.on('data', append)
    child.stderr?.on('data', append)
    const deadline = Date.now() + timeoutMs
    // polled over the control socket, not with `deltamesh status` processes: cheaper on a 2-core machine
    const client = this.api(site)
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`agent ${site.name} exited ${child.exitCode ?? child.signalCode}:\n${site.log}`)
      const error = await client.status().then(() => undefined, (err: Error) => err)
      if (error === undefined) return
      if (Date.now() > deadline) throw new Error(`agent ${site.name} did not come up:\n${site.log}\n${error.message}`)
      await sleep(50)
    }
  }

  /** The site's control API (status, sync…), straight over its socket. */
  api (site: Site): ControlClient {
    return new ControlClient(new HomeLayout(site.home).controlSocket, { home: site.home, callTimeoutMs: 10_000 })
  }

  async status (site: Site): Promise<AgentStatus> {
    return JSON.parse(await cliOk(['status', '--home', site.home, '--json'])) as AgentStatus
  }

  /** SIGTERM (clean) or SIGKILL (crash); resolves when the process is gone. */
  async stop (site: Site, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const child = site.process
    if (child === undefined || child.exitCode !== null || child.signalCode !== null) return
    const exited = new Promise<void>(resolveExit => child.once('exit', () => resolveExit()))
    child.kill(signal)
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000)
    await exited
    clearTimeout(timer)
    site.process = undefined
  }

  /** Changes the site's config.toml (before its agent starts), e.g. `{ limits: { up: '2MB/s' } }`: see config-edit.ts. */
  async editConfig (site: Site, patch: ConfigPatch): Promise<void> {
    await editConfig(new HomeLayout(site.home).config, patch)
  }

  /** Runs the CLI against this cluster; throws with its output when it fails. */
  async cli (args: string[]): Promise<string> {
    return await cliOk(args)
  }

  async cleanup (options: { keepFiles?: boolean } = {}): Promise<void> {
    await Promise.all(this.sites.map(async s => await this.stop(s, options.keepFiles === true ? 'SIGTERM' : 'SIGKILL')))
    if (options.keepFiles !== true) await rm(this.dir, { recursive: true, force: true })
  }
}

export async function sleep (ms: number): Promise<void> {
  await new Promise(resolveSleep => setTimeout(resolveSleep, ms))
}

export async function waitFor (what: string, predicate: () => Promise<boolean>, timeoutMs = 60_000, intervalMs = 200): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(intervalMs)
  }
}
