import { futimesSync, lutimesSync, utimesSync } from 'node:fs'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import { fsPath, pathToBytes } from '../../protocol/paths.js'

// File times to the nanosecond. Node's utimes family takes seconds as a double, about 240 ns apart at
// today's epoch, and libuv then truncates them to whole microseconds, so a mirror could not hold the source's
// nanoseconds; agent/native (built by scripts/build-native.mjs at install) calls utimensat/futimens with
// integers. Without it (no compiler at install) times are set through node to the source's microsecond (so
// the millisecond is always exact), and the agent says so at start (preciseTimesAvailable).

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

/** A time in nanoseconds as the manifest holds it: whole milliseconds (floored, also before 1970) and the nanoseconds past them. */
export function msAndNanos (ns: bigint): { mtimeMs: number, mtimeNs: number } {
  const ms = ns >= 0n ? ns / 1_000_000n : -((-ns + 999_999n) / 1_000_000n)
  return { mtimeMs: Number(ms), mtimeNs: Number(ns - ms * 1_000_000n) }
}

/** Seconds and nanoseconds (0 ≤ ns < 1e9) of a time given as whole milliseconds (floored) plus nanoseconds past them. */
export function secondsAndNanos (mtimeMs: number, mtimeNs = 0): [number, number] {
  const sec = Math.floor(mtimeMs / 1000)
  const msInSecond = mtimeMs - sec * 1000
  return [sec, msInSecond * 1_000_000 + mtimeNs]
}

/** Whether this node's libuv truncates a time's double to whole microseconds toward zero (Node 20 and 22 do; 24 does not). */
const TRUNCATES_TOWARD_ZERO = Number(process.versions.node.split('.')[0]) < 24

/** Below 2^32 s (years 1834–2106) a double's error in seconds is under 240 ns: the middle of a microsecond stays in it. */
const MICROSECOND_SAFE_SECONDS = 2 ** 32

/**
 * As node's seconds, for the fallback. libuv truncates the double toward zero to whole microseconds, so the
 * middle of the source's microsecond (toward zero's far side for times before 1970) lands exactly on it
 * despite the double's rounding: exact to the microsecond, hence to the millisecond. Past the safe range,
 * 0.1 ms past the millisecond keeps the floored millisecond exact, as before. A time before 1970 goes as a
 * numeric string: node turns a negative number into "now".
 */
export function fallbackSeconds (mtimeMs: number, mtimeNs = 0): number | string {
  const micros = mtimeMs * 1000 + Math.floor(mtimeNs / 1000)
  // Node 20's and 22's libuv truncate toward zero (the far side of the microsecond for a time before 1970); Node 24's
  // keeps the double's nanoseconds, so the middle of the microsecond from below is right for any sign there
  const half = micros < 0 && TRUNCATES_TOWARD_ZERO ? -0.5 : 0.5
  let seconds = (micros + half) / 1_000_000
  if (Math.abs(seconds) >= MICROSECOND_SAFE_SECONDS) seconds = (mtimeMs + 0.1) / 1000
  return seconds < 0 ? String(seconds) : seconds
}

/**
 * Whether a stat's `mtimeMs` (a double) is in the manifest's millisecond. Node computes it as
 * sec * 1000 + nsec / 1e6, which rounds a time within ~120 ns below the next millisecond up to exactly that
 * millisecond: with exact nanoseconds, `Math.floor` alone would call such a file changed.
 */
export function sameMillisecond (statMtimeMs: number, mtimeMs: number): boolean {
  return Math.floor(statMtimeMs) === mtimeMs || statMtimeMs === mtimeMs + 1
}

/** atime and mtime of an open file (atime = mtime, as the agent always sets them). */
export function setFdTimes (fd: number, mtimeMs: number, mtimeNs?: number): void {
  const l = load()
  if ('native' in l) {
    const [sec, ns] = secondsAndNanos(mtimeMs, mtimeNs)
    l.native.futimens(fd, sec, ns, sec, ns)
    return
  }
  const t = fallbackSeconds(mtimeMs, mtimeNs)
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
  const t = fallbackSeconds(mtimeMs, mtimeNs)
  if (options.noFollow) lutimesSync(fsPath(path), t, t)
  else utimesSync(fsPath(path), t, t)
}
