// Runs an operator's command (a subscription's gate or post-version command): no shell (argv as given), in
// its own process group with a minimal environment, with a deadline and the caller's signal; on either, the
// whole group gets SIGTERM, then SIGKILL after a grace. Only the last lines of its output are kept.
import { spawn } from 'node:child_process'

/** What a command's environment takes from the agent's own (everything else is left out). */
export const INHERITED_ENV = ['PATH', 'HOME', 'USER', 'LOGNAME', 'LANG', 'LC_ALL', 'LC_CTYPE', 'TZ', 'TMPDIR'] as const
const DEFAULT_PATH = '/usr/local/bin:/usr/bin:/bin'
/** Between SIGTERM to the group and SIGKILL. */
export const DEFAULT_KILL_GRACE_MS = 5_000
/** Output kept: the last bytes of stdout and stderr together, then its last lines, each cut to a length. */
export const OUTPUT_TAIL_BYTES = 16 * 1024
export const DEFAULT_OUTPUT_LINES = 20
export const MAX_OUTPUT_LINE_CHARS = 400
/** After the command exits, how long its pipes may stay open (a background child holding them) before we stop reading. */
const PIPE_CLOSE_GRACE_MS = 2_000

export interface RunCommandOptions {
  argv: readonly string[]
  cwd: string
  /** Added to the minimal environment (INHERITED_ENV). */
  env: Record<string, string | undefined>
  timeoutMs: number
  signal?: AbortSignal
  killGraceMs?: number
  outputLines?: number
  /** The agent's environment the inherited variables come from (tests). */
  baseEnv?: NodeJS.ProcessEnv
}

export interface CommandOutcome {
  ok: boolean
  exitCode: number | null
  /** The signal that ended it (ours after a timeout, or another). */
  signal: string | null
  timedOut: boolean
  aborted: boolean
  /** It could not be started (ENOENT, EACCES…). */
  spawnError?: string
  durationMs: number
  /** The last lines of its output (stdout and stderr as they came). */
  output: string[]
  outputBytes: number
}

/** The environment a command gets: INHERITED_ENV from the agent's (PATH always), then `extra`. */
export function minimalEnv (extra: Record<string, string | undefined>, base: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const env: Record<string, string> = {}
  for (const name of INHERITED_ENV) { const v = base[name]; if (v !== undefined) env[name] = v }
  env.PATH ??= DEFAULT_PATH
  for (const [k, v] of Object.entries(extra)) if (v !== undefined) env[k] = v
  return env
}

/** Why a command did not pass, in a few words (for logs, status and events). */
export function describeOutcome (o: CommandOutcome, timeoutMs?: number): string {
  if (o.spawnError !== undefined) return `could not start: ${o.spawnError}`
  if (o.timedOut) return `timed out after ${Math.round((timeoutMs ?? o.durationMs) / 1000)} s (process group killed)`
  if (o.aborted) return 'stopped (the agent is stopping or the version was superseded)'
  if (o.signal !== null) return `killed by ${o.signal}`
  return `exit code ${o.exitCode ?? '?'}`
}

/** Keeps the last OUTPUT_TAIL_BYTES of what it is given. */
class Tail {
  private parts: Buffer[] = []
  private size = 0
  total = 0
  add (chunk: Buffer): void {
    this.total += chunk.byteLength
    this.parts.push(chunk)
    this.size += chunk.byteLength
    while (this.size - (this.parts[0]?.byteLength ?? 0) >= OUTPUT_TAIL_BYTES) this.size -= (this.parts.shift() as Buffer).byteLength
  }

  lines (n: number): string[] {
    let buf = Buffer.concat(this.parts)
    if (buf.byteLength > OUTPUT_TAIL_BYTES) buf = buf.subarray(buf.byteLength - OUTPUT_TAIL_BYTES)
    const lines = buf.toString('utf8').split(/\r?\n/)
    if (lines[lines.length - 1] === '') lines.pop()
    return lines.slice(-n).map(l => l.length > MAX_OUTPUT_LINE_CHARS ? `${l.slice(0, MAX_OUTPUT_LINE_CHARS)}…` : l)
  }
}

function killGroup (pid: number | undefined, signal: NodeJS.Signals): void {
  if (pid === undefined) return
  try { process.kill(-pid, signal) } catch { /* the group is gone */ }
}

/** Runs the command to its end (or its deadline); never throws for the command's own failure. */
export async function runCommand (o: RunCommandOptions): Promise<CommandOutcome> {
  const started = Date.now()
  const tail = new Tail()
  const state = { timedOut: false, aborted: false }
  const child = spawn(o.argv[0] as string, o.argv.slice(1), { cwd: o.cwd, env: minimalEnv(o.env, o.baseEnv), detached: true, stdio: ['ignore', 'pipe', 'pipe'] })
  child.stdout.on('data', (b: Buffer) => { tail.add(b) })
  child.stderr.on('data', (b: Buffer) => { tail.add(b) })
  let killTimer: NodeJS.Timeout | undefined
  const stop = (why: 'timeout' | 'abort'): void => {
    if (why === 'timeout') state.timedOut = true
    else state.aborted = true
    killGroup(child.pid, 'SIGTERM')
    killTimer ??= setTimeout(() => { killGroup(child.pid, 'SIGKILL') }, o.killGraceMs ?? DEFAULT_KILL_GRACE_MS)
  }
  const deadline = setTimeout(() => { stop('timeout') }, o.timeoutMs)
  const onAbort = (): void => { stop('abort') }
  if (o.signal?.aborted === true) onAbort()
  o.signal?.addEventListener('abort', onAbort, { once: true })
  const ended = await new Promise<{ code: number | null, signal: string | null, spawnError?: string }>(resolve => {
    let exited: { code: number | null, signal: string | null } | undefined
    child.once('error', err => { resolve({ code: null, signal: null, spawnError: (err as NodeJS.ErrnoException).code ?? err.message }) })
    child.once('exit', (code, signal) => {
      exited = { code, signal }
      // a background process may keep the pipes open: stop waiting for them after a grace
      setTimeout(() => { child.stdout.destroy(); child.stderr.destroy(); resolve(exited as typeof ended) }, PIPE_CLOSE_GRACE_MS).unref()
    })
    child.once('close', (code, signal) => { resolve(exited ?? { code, signal }) })
  })
  clearTimeout(deadline)
  o.signal?.removeEventListener('abort', onAbort)
  // what the command left running in its group after a timeout is killed too
  if (state.timedOut || state.aborted) killGroup(child.pid, 'SIGKILL')
  clearTimeout(killTimer)
  const ok = ended.spawnError === undefined && ended.code === 0 && !state.timedOut && !state.aborted
  return { ok, exitCode: ended.code, signal: ended.signal, ...state, spawnError: ended.spawnError, durationMs: Date.now() - started, output: tail.lines(o.outputLines ?? DEFAULT_OUTPUT_LINES), outputBytes: tail.total }
}
