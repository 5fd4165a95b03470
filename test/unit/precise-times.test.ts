import { spawnSync } from 'node:child_process'
import { closeSync, lstatSync, mkdtempSync, openSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Worker } from 'node:worker_threads'
import { afterAll, describe, expect, it } from 'vitest'
import { preciseTimesAvailable, sameMillisecond, secondsAndNanos, setFdTimes, setPathTimes } from '../../agent/fs/precise-times.js'
import { bytesToPath } from '../../protocol/paths.js'

const dir = mkdtempSync(join(tmpdir(), 'dm-times-'))
afterAll(() => { rmSync(dir, { recursive: true, force: true }) })

/** A time as the manifest holds it: whole milliseconds (floored) and nanoseconds past them. */
function parts (ns: bigint): { ms: number, rest: number } {
  const ms = ns >= 0n ? ns / 1_000_000n : -((-ns + 999_999n) / 1_000_000n)
  return { ms: Number(ms), rest: Number(ns - ms * 1_000_000n) }
}

describe('file times to the nanosecond', () => {
  it('the native helper is built here (npm ci builds it; without a compiler the agent warns and falls back)', () => {
    expect(preciseTimesAvailable()).toEqual({ ok: true })
  })

  it('splits milliseconds and nanoseconds into seconds and nanoseconds, before 1970 too', () => {
    expect(secondsAndNanos(1_700_000_000_123, 456_789)).toEqual([1_700_000_000, 123_456_789])
    expect(secondsAndNanos(-1, 999_999)).toEqual([-1, 999_999_999])
    expect(secondsAndNanos(-1500, 1)).toEqual([-2, 500_000_001])
  })

  it.each([
    ['a file, through its descriptor', 1_765_000_000_123_456_789n],
    ['a time before 1970', -86_400_000_000_001n],
  ])('%s gets the exact nanoseconds', (_name, ns) => {
    const path = join(dir, `f-${ns}`)
    writeFileSync(path, 'x')
    const fd = openSync(path, 'r+')
    try { setFdTimes(fd, parts(ns).ms, parts(ns).rest) } finally { closeSync(fd) }
    expect(statSync(path, { bigint: true }).mtimeNs).toBe(ns)
  })

  it('sets a symlink\'s own times with noFollow, its target untouched, under a name that is not UTF-8', () => {
    const target = join(dir, 'target')
    writeFileSync(target, 't')
    const before = statSync(target, { bigint: true }).mtimeNs
    const link = join(dir, bytesToPath(Buffer.from([0x6c, 0xe9])))
    symlinkSync('target', Buffer.from(`${dir}/l\xe9`, 'latin1'))
    const ns = 1_700_000_000_000_000_007n
    setPathTimes(link, parts(ns).ms, parts(ns).rest, { noFollow: true })
    expect(lstatSync(Buffer.from(`${dir}/l\xe9`, 'latin1'), { bigint: true }).mtimeNs).toBe(ns)
    expect(statSync(target, { bigint: true }).mtimeNs).toBe(before)
  })

  it('a missing path throws like node:fs (code ENOENT)', () => {
    expect(() => { setPathTimes(join(dir, 'missing'), 0, 0, { noFollow: false }) }).toThrow(expect.objectContaining({ code: 'ENOENT', syscall: 'utimensat' }))
  })

  it('loads in a worker thread (the agent sets times in its filesystem worker)', async () => {
    const path = join(dir, 'from-worker')
    writeFileSync(path, 'w')
    // the compiled module (npm test builds dist/ first): also checks that dist/ finds agent/native's build
    const module = new URL('../../dist/agent/fs/precise-times.js', import.meta.url).href
    const worker = new Worker(`
      const { workerData, parentPort } = require('node:worker_threads')
      import(workerData.module).then(m => { m.setPathTimes(workerData.path, 1700000000001, 2, { noFollow: false }); parentPort.postMessage('ok') }, err => parentPort.postMessage(String(err)))
    `, { eval: true, workerData: { module, path } })
    const reply = await new Promise(resolve => worker.once('message', resolve))
    await worker.terminate()
    expect(reply).toBe('ok')
    expect(statSync(path, { bigint: true }).mtimeNs).toBe(1_700_000_000_001_000_002n)
  })

  it.each([
    ['a time past the millisecond', 1_765_000_000_123_456_789n, 1_765_000_000_123_456_000n],
    ['a time in the first microsecond of its millisecond', 1_765_000_000_123_000_999n, 1_765_000_000_123_000_000n],
    ['a time in the last microsecond of its millisecond', 1_765_000_000_123_999_999n, 1_765_000_000_123_999_000n],
    ['a whole millisecond (a manifest without mtimeNs)', 1_765_000_000_123_000_000n, 1_765_000_000_123_000_000n],
    ['a time before 1970 (node turns a negative number into "now")', -86_400_000_000_001n, -86_400_000_001_000n],
    ['a whole millisecond before 1970', -1_500_000_000n, -1_500_000_000n],
  ])('without the helper (DELTAMESH_NO_NATIVE_TIMES=1), %s is set to its microsecond', (_name, ns, expected) => {
    const path = join(dir, `fallback-${ns}`)
    writeFileSync(path, 'f')
    const { ms, rest } = parts(ns)
    const script = `import { preciseTimesAvailable, setFdTimes, setPathTimes } from ${JSON.stringify(new URL('../../agent/fs/precise-times.ts', import.meta.url).href)}
      import { openSync, closeSync } from 'node:fs'
      if (preciseTimesAvailable().ok) throw new Error('the helper was loaded')
      setPathTimes(${JSON.stringify(path)}, ${ms}, ${rest === 0 ? 'undefined' : rest}, { noFollow: false })
      const fd = openSync(${JSON.stringify(`${path}-fd`)}, 'w')
      try { setFdTimes(fd, ${ms}, ${rest === 0 ? 'undefined' : rest}) } finally { closeSync(fd) }`
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { env: { ...process.env, DELTAMESH_NO_NATIVE_TIMES: '1' }, encoding: 'utf8' })
    expect(r.status, r.stderr).toBe(0)
    // within the expected microsecond: Node 20's libuv truncates to it exactly; Node 22/24 keep the double's
    // nanoseconds, a few hundred past its start (the middle of the microsecond aimed at, rounded)
    for (const set of [statSync(path, { bigint: true }).mtimeNs, statSync(`${path}-fd`, { bigint: true }).mtimeNs]) {
      expect(set >= expected && set < expected + 1000n, `${set} in the microsecond from ${expected}`).toBe(true)
    }
  })

  it('a stat\'s mtimeMs (a double) is compared in the right millisecond, even when it rounds up to the next one', () => {
    const path = join(dir, 'rounds-up')
    writeFileSync(path, 'r')
    const fd = openSync(path, 'r+')
    try { setFdTimes(fd, 1_765_000_000_123, 999_950) } finally { closeSync(fd) }
    const mtimeMs = statSync(path).mtimeMs
    expect(mtimeMs).toBe(1_765_000_000_124) // node rounds sec * 1000 + nsec / 1e6
    expect(sameMillisecond(mtimeMs, 1_765_000_000_123)).toBe(true)
    expect(sameMillisecond(mtimeMs, 1_765_000_000_124)).toBe(true)
    expect(sameMillisecond(1_765_000_000_123.5, 1_765_000_000_123)).toBe(true)
    expect(sameMillisecond(1_765_000_000_123.5, 1_765_000_000_122)).toBe(false)
    expect(sameMillisecond(1_765_000_000_124.5, 1_765_000_000_123)).toBe(false)
    expect(sameMillisecond(-0.5, -1)).toBe(true)
  })
})
