// Processes for the benchmarks: everything started is tracked so that one cleanup (also on Ctrl-C) stops it;
// CPU and peak RSS come from /proc (for our long-lived processes) or GNU time (for one-shot incumbents).
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { loadavg } from 'node:os'

const CLK_TCK = (() => { try { return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100 } catch { return 100 } })()

export const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

export interface Cpu { self: number, children: number }

/** CPU seconds of pid (all threads: utime+stime) and of its reaped children (cutime+cstime). */
export function cpuOf (pid: number): Cpu {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  const n = (field: number): number => Number(f[field - 3])
  return { self: (n(14) + n(15)) / CLK_TCK, children: (n(16) + n(17)) / CLK_TCK }
}

/** Peak RSS (VmHWM) in MiB; NaN once the process is gone. */
export function peakRssMiB (pid: number): number {
  try {
    const m = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m === null ? NaN : Number(m[1]) / 1024
  } catch { return NaN }
}

export function childrenOf (pid: number): number[] {
  try { return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(s => s !== '').map(Number) } catch { return [] }
}

/**
 * The rsync daemon forks a child per connection that is gone before we could read its /proc: sample the
 * peak RSS of pid and every descendant every 100 ms while a round runs.
 */
export class RssSampler {
  private peak = 0
  private readonly timer: NodeJS.Timeout
  constructor (private readonly pid: number) {
    this.timer = setInterval(() => { this.sample() }, 100)
  }

  private sample (): void {
    const walk = (p: number): void => {
      const r = peakRssMiB(p)
      if (r > this.peak) this.peak = r
      for (const c of childrenOf(p)) walk(c)
    }
    walk(this.pid)
  }

  stop (): number {
    clearInterval(this.timer)
    this.sample()
    return this.peak
  }
}

const started = new Set<ChildProcess>()

export function track (child: ChildProcess): ChildProcess {
  started.add(child)
  child.once('exit', () => started.delete(child))
  return child
}

export function killStarted (): void {
  for (const child of started) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
}

export interface RunResult { code: number | null, stdout: string, stderr: string }

export async function run (cmd: string, args: string[], options: { cwd?: string, env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  return await new Promise((resolve, reject) => {
    const child = track(spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], cwd: options.cwd, env: options.env === undefined ? undefined : { ...process.env, ...options.env } }))
    let stdout = ''
    let stderr = ''
    child.stdout?.on('data', (d: Buffer) => { stdout += d.toString() })
    child.stderr?.on('data', (d: Buffer) => { stderr += d.toString() })
    child.on('error', reject)
    child.on('close', code => resolve({ code, stdout, stderr }))
  })
}

export async function runOk (cmd: string, args: string[], options: { cwd?: string, env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  const r = await run(cmd, args, options)
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}:\n${r.stderr.slice(-4000)}\n${r.stdout.slice(-2000)}`)
  return r
}

export interface Timed extends RunResult { wall: number, cpu: number, rssMiB: number }

const TIME_MARK = '@@bench-time'

/** Runs under GNU time: wall, CPU (user+sys, children included) and peak RSS of a one-shot tool. */
export async function timed (cmd: string, args: string[], options: { cwd?: string, env?: NodeJS.ProcessEnv } = {}): Promise<Timed> {
  const r = await run('/usr/bin/time', ['-f', `${TIME_MARK} %e %U %S %M`, cmd, ...args], options)
  const lines = r.stderr.split('\n')
  const at = lines.findLastIndex(l => l.startsWith(TIME_MARK))
  if (at < 0) throw new Error(`${cmd}: no GNU time output (is /usr/bin/time installed?)\n${r.stderr}`)
  const [wall, user, sys, kb] = (lines[at] as string).split(' ').slice(1).map(Number) as [number, number, number, number]
  const stderr = [...lines.slice(0, at), ...lines.slice(at + 1)].join('\n')
  const out = { ...r, stderr, wall, cpu: user + sys, rssMiB: kb / 1024 }
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}:\n${stderr.slice(-4000)}\n${r.stdout.slice(-2000)}`)
  return out
}

/**
 * Other engineers' runs share these 2 cores: before a measured run wait (up to maxMinutes) until the
 * 1-minute load is below `below`; the load at the start is reported next to the figures either way.
 */
export async function waitForQuiet (below: number, maxMinutes: number, log: (s: string) => void): Promise<number> {
  const deadline = Date.now() + maxMinutes * 60_000
  for (;;) {
    const load = loadavg()[0] as number
    if (load < below) return load
    if (Date.now() > deadline) { log(`load ${load.toFixed(2)} still ≥ ${below} after ${maxMinutes} min: measuring anyway`); return load }
    log(`load ${load.toFixed(2)} ≥ ${below}: waiting 30 s`)
    await sleep(30_000)
  }
}

/**
 * `perf record` of pid (all threads, call graphs) until stop(); resolves once perf is sampling. For the
 * benchmarks' --perf: with node's --perf-basic-prof, JS frames get their names. V8's own profiler charged time
 * spent preempted on a shared machine to whatever JS frame was on the stack; perf's cpu-clock samples only
 * time on a CPU, kernel included.
 */
export async function startPerf (pid: number, out: string): Promise<{ stop: () => Promise<void> }> {
  const child = spawn('perf', ['record', '-F', '997', '-g', '-p', String(pid), '-o', out], { stdio: ['ignore', 'ignore', 'pipe'] })
  const exited = new Promise<void>((resolve, reject) => {
    child.once('error', reject)
    child.once('exit', () => { resolve() })
  })
  await sleep(300) // perf attaches to every thread before the phase starts
  if (child.exitCode !== null) throw new Error(`perf record exited with ${child.exitCode} (is linux-perf installed?)`)
  return { stop: async () => { child.kill('SIGINT'); await exited } }
}
