import { lstat, mkdir, mkdtemp, open, readFile, rm, symlink, utimes, writeFile, type FileHandle } from 'node:fs/promises'
import { randomBytes } from 'node:crypto'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { FsBatch, FsWorkerError } from '../../agent/fs/fs-batch.js'
import { timeOf, writevAt } from '../../agent/fs/fs-safe.js'
import { chunkIdOf } from '../../protocol/chunk-id.js'

const dirs: string[] = []
const batches: FsBatch[] = []
afterEach(async () => {
  for (const b of batches.splice(0)) await b.close()
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true })
})

async function scratch (): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'deltamesh-fsbatch-'))
  dirs.push(dir)
  return dir
}

function batch (): FsBatch {
  const b = new FsBatch({ idleMs: 200 })
  batches.push(b)
  return b
}

const MTIME = 1_700_000_000_123

/** A previous version's file: its bytes, mode and mtime as the manifest says. */
async function previousFile (path: string, content: string, mode = 0o644): Promise<{ size: number, mode: number, mtimeMs: number }> {
  await writeFile(path, content, { mode })
  await utimes(path, timeOf(MTIME), timeOf(MTIME))
  return { size: Buffer.byteLength(content), mode, mtimeMs: MTIME }
}

describe('FsBatch', () => {
  it('runs steps in the order they were requested: a file goes into a directory whose creation was requested just before', async () => {
    const dir = await scratch()
    const fs = batch()
    const source = join(dir, 'old.txt')
    const expect1 = await previousFile(source, 'unchanged\n')
    const steps = [
      fs.run({ type: 'dir', path: join(dir, 'a') }),
      fs.run({ type: 'dir', path: join(dir, 'a', 'b') }),
      fs.run({ type: 'link', source, target: join(dir, 'a', 'b', 'linked.txt'), expect: expect1, replace: false }),
      fs.run({ type: 'create', path: join(dir, 'a', 'b', 'new.bin'), pieces: [{ offset: 0, bytes: Buffer.from('xy') }, { offset: 2, bytes: Buffer.from('z') }], mode: 0o640, mtimeMs: MTIME }),
    ]
    expect(await Promise.all(steps)).toEqual([null, null, 'linked', null])
    const linked = await lstat(join(dir, 'a', 'b', 'linked.txt'))
    expect(linked.ino).toBe((await lstat(source)).ino)
    const created = await lstat(join(dir, 'a', 'b', 'new.bin'))
    expect(await readFile(join(dir, 'a', 'b', 'new.bin'), 'utf8')).toBe('xyz')
    expect(created.mode & 0o7777).toBe(0o640)
    expect(Math.floor(created.mtimeMs)).toBe(MTIME)
    expect((await lstat(join(dir, 'a'))).mode & 0o777).toBe(0o700)
  })

  it('moves the bytes a step gives up to the worker (the buffer is detached here), once even when two pieces share it', async () => {
    const dir = await scratch()
    const fs = batch()
    const bytes = Uint8Array.prototype.slice.call(randomBytes(100_000))
    const expected = Buffer.from(bytes)
    await fs.run({ type: 'create', path: join(dir, 'moved.bin'), pieces: [{ offset: 0, bytes }, { offset: 100_000, bytes }], mode: 0o644, mtimeMs: MTIME }, [bytes.buffer as ArrayBuffer])
    expect(bytes.byteLength).toBe(0)
    expect((await readFile(join(dir, 'moved.bin'))).equals(Buffer.concat([expected, expected]))).toBe(true)
  })

  it('links only a source that still matches its manifest entry, and reports refusals apart from changes', async () => {
    const dir = await scratch()
    const fs = batch()
    const source = join(dir, 'src.txt')
    const entry = await previousFile(source, 'abc')
    expect(await fs.run({ type: 'link', source, target: join(dir, 't1'), expect: { ...entry, size: 4 }, replace: false })).toBe('changed')
    expect(await fs.run({ type: 'link', source, target: join(dir, 't2'), expect: { ...entry, mode: 0o600 }, replace: false })).toBe('changed')
    expect(await fs.run({ type: 'link', source, target: join(dir, 't3'), expect: { ...entry, mtimeMs: MTIME + 1 }, replace: false })).toBe('changed')
    expect(await fs.run({ type: 'link', source: join(dir, 'missing'), target: join(dir, 't4'), expect: entry, replace: false })).toBe('changed')
    await expect(lstat(join(dir, 't1'))).rejects.toThrow()
    // a symlink where the previous file was is never linked (nor followed)
    await symlink(source, join(dir, 'via-link'))
    expect(await fs.run({ type: 'link', source: join(dir, 'via-link'), target: join(dir, 't5'), expect: entry, replace: false })).toBe('changed')
  })

  it('times to the nanosecond: create sets them, and a file in the last nanoseconds of its millisecond still matches its entry', async () => {
    const dir = await scratch()
    const fs = batch()
    // 999,950 ns past the millisecond: node's stat reports mtimeMs as the next millisecond (a rounded double)
    await fs.run({ type: 'create', path: join(dir, 'exact'), pieces: [{ offset: 0, bytes: Buffer.from('abc') }], mode: 0o644, mtimeMs: MTIME, mtimeNs: 999_950 })
    expect((await lstat(join(dir, 'exact'), { bigint: true })).mtimeNs).toBe(BigInt(MTIME) * 1_000_000n + 999_950n)
    const entry = { size: 3, mode: 0o644, mtimeMs: MTIME }
    expect(await fs.run({ type: 'link', source: join(dir, 'exact'), target: join(dir, 'linked'), expect: entry, replace: false })).toBe('linked')
    expect(await fs.run({ type: 'link', source: join(dir, 'exact'), target: join(dir, 'other'), expect: { ...entry, mtimeMs: MTIME - 1 }, replace: false })).toBe('changed')
  })

  it('replace: keeps a target that is already the same inode, removes anything else first; without it an existing target is an error', async () => {
    const dir = await scratch()
    const fs = batch()
    const source = join(dir, 'src.txt')
    const entry = await previousFile(source, 'abc')
    expect(await fs.run({ type: 'link', source, target: join(dir, 'same'), expect: entry, replace: false })).toBe('linked')
    expect(await fs.run({ type: 'link', source, target: join(dir, 'same'), expect: entry, replace: true })).toBe('linked')
    await mkdir(join(dir, 'planted', 'deep'), { recursive: true })
    expect(await fs.run({ type: 'link', source, target: join(dir, 'planted'), expect: entry, replace: true })).toBe('linked')
    expect((await lstat(join(dir, 'planted'))).ino).toBe((await lstat(source)).ino)
    await writeFile(join(dir, 'other'), 'other')
    await expect(fs.run({ type: 'link', source, target: join(dir, 'other'), expect: entry, replace: false })).rejects.toMatchObject({ code: 'EEXIST' })
    expect(await readFile(join(dir, 'other'), 'utf8')).toBe('other')
  })

  it('never creates through a planted symlink, and a failed step does not stop the ones after it', async () => {
    const dir = await scratch()
    const fs = batch()
    const outside = join(dir, 'outside.txt')
    await writeFile(outside, 'keep')
    await symlink(outside, join(dir, 'trap'))
    const results = await Promise.allSettled([
      fs.run({ type: 'create', path: join(dir, 'trap'), pieces: [{ offset: 0, bytes: Buffer.from('evil') }], mode: 0o644, mtimeMs: MTIME }),
      fs.run({ type: 'create', path: join(dir, 'fine'), pieces: [], mode: 0o644, mtimeMs: MTIME }),
      fs.run({ type: 'lstat', path: join(dir, 'trap') }),
      fs.run({ type: 'lstat', path: join(dir, 'nothing-here') }),
    ])
    expect(results[0]).toMatchObject({ status: 'rejected', reason: { code: 'EEXIST' } })
    expect(results[1]).toEqual({ status: 'fulfilled', value: null })
    expect(results[2]).toMatchObject({ status: 'fulfilled', value: { kind: 'symlink' } })
    expect(results[3]).toEqual({ status: 'fulfilled', value: null })
    expect(await readFile(outside, 'utf8')).toBe('keep')
    expect((await lstat(join(dir, 'fine'))).size).toBe(0)
  })

  it('a directory step makes an existing directory writable again and replaces a file or symlink in its place', async () => {
    const dir = await scratch()
    const fs = batch()
    await mkdir(join(dir, 'ro'), { mode: 0o555 })
    await writeFile(join(dir, 'was-file'), 'x')
    await symlink(dir, join(dir, 'was-link'))
    for (const name of ['ro', 'was-file', 'was-link']) await fs.run({ type: 'dir', path: join(dir, name) })
    expect((await lstat(join(dir, 'ro'))).mode & 0o700).toBe(0o700)
    expect((await lstat(join(dir, 'was-file'))).isDirectory()).toBe(true)
    expect((await lstat(join(dir, 'was-link'))).isDirectory()).toBe(true)
  })

  it('steps in flight when the batch is closed fail with FsWorkerError; the next step starts a new worker', async () => {
    const dir = await scratch()
    const fs = batch()
    const many = Array.from({ length: 2000 }, (_, i) => fs.run({ type: 'lstat', path: join(dir, `n${i}`) }))
    const settling = Promise.allSettled(many)
    await new Promise(resolve => setImmediate(resolve))
    await fs.close()
    const settled = await settling
    const failed = settled.filter(r => r.status === 'rejected')
    expect(failed.length).toBeGreaterThan(0)
    for (const r of failed) expect((r as PromiseRejectedResult).reason).toBeInstanceOf(FsWorkerError)
    expect(await fs.run({ type: 'lstat', path: dir })).toMatchObject({ kind: 'dir' })
  })

  it('reads chunks checked against their ids: several of one file in a batch, short reads, mismatches, no symlinks', async () => {
    const dir = await scratch()
    const fs = batch()
    const bytes = randomBytes(10_000)
    const path = join(dir, 'f')
    await writeFile(path, bytes)
    const piece = (offset: number, size: number): { type: 'read', path: string, offset: number, size: number, id: Uint8Array } =>
      ({ type: 'read', path, offset, size, id: chunkIdOf(bytes.subarray(offset, offset + size)) })
    const [a, b, c] = await Promise.all([fs.run(piece(0, 4000)), fs.run(piece(4000, 4000)), fs.run(piece(8000, 2000))])
    expect([a, b, c].map(r => r.kind)).toEqual(['ok', 'ok', 'ok'])
    expect(Buffer.concat([a, b, c].map(r => (r as { bytes: Uint8Array }).bytes))).toEqual(bytes)
    expect(await fs.run({ ...piece(8000, 2000), size: 3000 })).toEqual({ kind: 'short', bytesRead: 2000 })
    expect(await fs.run({ ...piece(0, 4000), offset: 1 })).toEqual({ kind: 'mismatch' })
    await symlink(path, join(dir, 'link'))
    await expect(fs.run({ ...piece(0, 4000), path: join(dir, 'link') })).rejects.toHaveProperty('code', 'ELOOP')
    await expect(fs.run({ ...piece(0, 4000), path: join(dir, 'gone') })).rejects.toHaveProperty('code', 'ENOENT')
  })
})

describe('writevAt', () => {
  it('writes a run of buffers back to back, and finishes a short writev buffer by buffer', async () => {
    const file = Buffer.alloc(40)
    const parts = [Buffer.alloc(10, 'a'), Buffer.alloc(10, 'b'), Buffer.alloc(10, 'c')]
    let writevs = 0
    const handle = {
      // the kernel took 14 bytes of the 30: the rest must follow, each byte at its own offset
      writev: async (buffers: Uint8Array[], position: number) => { writevs++; Buffer.concat(buffers).copy(file, position, 0, 14); return { bytesWritten: 14, buffers } },
      write: async (b: Uint8Array, offset: number, length: number, position: number) => { Buffer.from(b.buffer, b.byteOffset + offset, length).copy(file, position); return { bytesWritten: length, buffer: b } },
    } as unknown as FileHandle
    await writevAt(handle, parts, 5)
    expect(writevs).toBe(1)
    expect(file.toString('latin1')).toBe(`${'\0'.repeat(5)}${'a'.repeat(10)}${'b'.repeat(10)}${'c'.repeat(10)}${'\0'.repeat(5)}`)

    const dir = await mkdtemp(join(tmpdir(), 'deltamesh-writev-'))
    try {
      const real = await open(join(dir, 'f'), 'w+')
      await writevAt(real, parts, 3)
      await real.close()
      expect((await readFile(join(dir, 'f'))).toString('latin1')).toBe(`${'\0'.repeat(3)}${'a'.repeat(10)}${'b'.repeat(10)}${'c'.repeat(10)}`)
    } finally { await rm(dir, { recursive: true, force: true }) }
  })
})
