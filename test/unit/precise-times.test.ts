import { spawnSync } from 'node:child_process'
import { closeSync, lstatSync, mkdtempSync, openSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Worker } from 'node:worker_threads'
import { afterAll, describe, expect, it } from 'vitest'
import { preciseTimesAvailable, secondsAndNanos, setFdTimes, setPathTimes } from '../../agent/fs/precise-times.js'
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

  it('without the helper, times stay exact to the millisecond (DELTAMESH_NO_NATIVE_TIMES=1)', () => {
    const path = join(dir, 'fallback')
    writeFileSync(path, 'f')
    const script = `import { setPathTimes } from ${JSON.stringify(new URL('../../agent/fs/precise-times.ts', import.meta.url).href)}
      setPathTimes(${JSON.stringify(path)}, 1765000000123, 456789, { noFollow: false })`
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { env: { ...process.env, DELTAMESH_NO_NATIVE_TIMES: '1' }, encoding: 'utf8' })
    expect(r.status, r.stderr).toBe(0)
    const ns = statSync(path, { bigint: true }).mtimeNs
    expect(ns / 1_000_000n).toBe(1_765_000_000_123n)
    expect(Number(ns % 1_000_000n - 456_789n)).toBeLessThan(1000)
  })
})
