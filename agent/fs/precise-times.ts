import { futimesSync, lutimesSync, utimesSync } from 'node:fs'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import { fsPath, pathToBytes } from '../../protocol/paths.js'

// File times to the nanosecond. Node's utimes family takes seconds as a double, about 240 ns apart at
// today's epoch, so a mirror could not hold the source's nanoseconds; agent/native (built by
// scripts/build-native.mjs at install) calls utimensat/futimens with integers. Without it (no compiler at
// install) times are set through node, exact to the millisecond and within a microsecond past it, and the
// agent says so at start (preciseTimesAvailable).

interface NativeTimes {
  futimens: (fd: number, atimeSec: number, atimeNsec: number, mtimeSec: number, mtimeNsec: number) => void
  utimensat: (path: Buffer, atimeSec: number, atimeNsec: number, mtimeSec: number, mtimeNsec: number, noFollow: boolean) => void
}

const NATIVE_CANDIDATES = [
  '../native/build/Release/times.node', // running from the TypeScript sources (vitest, tsx)
  '../../../agent/native/build/Release/times.node', // running from dist/agent/fs/
]

let loaded: { native: NativeTimes } | { reason: string } | undefined

function load (): { native: NativeTimes } | { reason: string } {
  if (loaded !== undefined) return loaded
  if (process.env.DELTAMESH_NO_NATIVE_TIMES === '1') return (loaded = { reason: 'disabled by DELTAMESH_NO_NATIVE_TIMES=1' })
  const require = createRequire(import.meta.url)
  const errors: string[] = []
  for (const candidate of NATIVE_CANDIDATES) {
    try {
      return (loaded = { native: require(fileURLToPath(new URL(candidate, import.meta.url))) as NativeTimes })
    } catch (err) {
      errors.push((err as Error).message.split('\n')[0] ?? String(err))
    }
  }
  return (loaded = { reason: `native helper not built (${errors.at(-1) ?? 'not found'})` })
}

export function preciseTimesAvailable (): { ok: true } | { ok: false, reason: string } {
  const l = load()
  return 'native' in l ? { ok: true } : { ok: false, reason: l.reason }
}

/** Seconds and nanoseconds (0 ≤ ns < 1e9) of a time given as whole milliseconds (floored) plus nanoseconds past them. */
export function secondsAndNanos (mtimeMs: number, mtimeNs = 0): [number, number] {
  const sec = Math.floor(mtimeMs / 1000)
  const msInSecond = mtimeMs - sec * 1000
  return [sec, msInSecond * 1_000_000 + mtimeNs]
}

/**
 * As node's seconds: 0.1 ms past the millisecond keeps the floored value exact despite the double's
 * rounding (about 240 ns at today's epoch); the nanoseconds past it are as near as the double allows.
 */
function asSeconds (mtimeMs: number, mtimeNs = 0): number {
  return mtimeNs === 0 ? (mtimeMs + 0.1) / 1000 : (mtimeMs + Math.max(mtimeNs, 100_000) / 1_000_000) / 1000
}

/** atime and mtime of an open file (atime = mtime, as the agent always sets them). */
export function setFdTimes (fd: number, mtimeMs: number, mtimeNs?: number): void {
  const l = load()
  if ('native' in l) {
    const [sec, ns] = secondsAndNanos(mtimeMs, mtimeNs)
    l.native.futimens(fd, sec, ns, sec, ns)
    return
  }
  const t = asSeconds(mtimeMs, mtimeNs)
  futimesSync(fd, t, t)
}

/** atime and mtime of a path (which may hold escaped bytes, protocol/paths.ts); `noFollow` sets a symlink's own times. */
export function setPathTimes (path: string, mtimeMs: number, mtimeNs: number | undefined, options: { noFollow: boolean }): void {
  const l = load()
  if ('native' in l) {
    const [sec, ns] = secondsAndNanos(mtimeMs, mtimeNs)
    l.native.utimensat(pathToBytes(path), sec, ns, sec, ns, options.noFollow)
    return
  }
  const t = asSeconds(mtimeMs, mtimeNs)
  if (options.noFollow) lutimesSync(fsPath(path), t, t)
  else utimesSync(fsPath(path), t, t)
}
