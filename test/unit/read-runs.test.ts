import { randomBytes } from 'node:crypto'
import { lstat, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { chunkIdOf } from '../../protocol/chunk-id.js'
import { ReadFiles, readHashes, type FsOp, type FsOutcomes } from '../../agent/fs/fs-batch-ops.js'
import { runFsOps } from '../../agent/fs/read-runs.js'
import { stampOf } from '../../agent/fs/file-stamp.js'
import { serializeError } from '../../agent/core/workers.js'

// Chunk reads that follow each other in a file are read as one run (one pread, one buffer), each chunk with
// the outcome it would have had alone.

let dir: string
beforeEach(async () => { dir = await mkdtemp(join(tmpdir(), 'deltamesh-runs-')) })
afterEach(async () => { await rm(dir, { recursive: true, force: true }) })

const SIZES = [1000, 3000, 2000, 4096]

function readsOf (path: string, bytes: Buffer, sizes = SIZES): Array<Extract<FsOp, { type: 'read' }>> {
  let offset = 0
  return sizes.map(size => {
    const op = { type: 'read' as const, path, offset, size, id: chunkIdOf(bytes.subarray(offset, offset + size)) }
    offset += size
    return op
  })
}

function run (ops: FsOp[]): Array<FsOutcomes['read'] | { error: unknown }> {
  const files = new ReadFiles()
  try {
    return runFsOps(ops, serializeError, files).map(r => r.ok ? r.value as FsOutcomes['read'] : { error: r.error })
  } finally { files.closeAll() }
}

describe('chunk reads in runs', () => {
  it('reads adjacent chunks of a file into views of one buffer, each hashed against its own id', async () => {
    const bytes = randomBytes(10_096)
    const path = join(dir, 'f')
    await writeFile(path, bytes)
    const before = readHashes.count
    const out = run(readsOf(path, bytes))
    expect(readHashes.count).toBe(before + SIZES.length)
    let offset = 0
    const buffers = new Set<ArrayBufferLike>()
    out.forEach((o, i) => {
      expect(o).toMatchObject({ kind: 'ok', hashed: true })
      const got = (o as { bytes: Uint8Array }).bytes
      expect(Buffer.from(got).equals(bytes.subarray(offset, offset + (SIZES[i] as number)))).toBe(true)
      buffers.add(got.buffer)
      offset += SIZES[i] as number
    })
    expect(buffers.size).toBe(1)
  })

  it('refuses the one chunk whose bytes changed and serves its neighbours; a stamp vouches per chunk', async () => {
    const bytes = randomBytes(10_096)
    const path = join(dir, 'f')
    await writeFile(path, bytes)
    const ops = readsOf(path, bytes)
    const stamp = stampOf(await lstat(path, { bigint: true }))
    ops[0] = { ...ops[0]!, stamp }
    ops[2] = { ...ops[2]!, id: chunkIdOf(Buffer.from('something else')) }
    const out = run(ops)
    expect(out.map(o => 'kind' in o ? o.kind : 'error')).toEqual(['ok', 'ok', 'mismatch', 'ok'])
    expect(out[0]).toMatchObject({ hashed: false })
    expect(out[1]).toMatchObject({ hashed: true })
  })

  it('reads a run cut short by the end of the file chunk by chunk: the whole chunks are served, the cut one is short', async () => {
    const bytes = randomBytes(10_096)
    const path = join(dir, 'f')
    await writeFile(path, bytes.subarray(0, 7000))
    const out = run(readsOf(path, bytes))
    expect(out.map(o => 'kind' in o ? o.kind : 'error')).toEqual(['ok', 'ok', 'ok', 'short'])
  })

  it('does not join reads of other files, gaps or other steps; each still gets its own result in order', async () => {
    const a = randomBytes(8000)
    const b = randomBytes(8000)
    await writeFile(join(dir, 'a'), a)
    await writeFile(join(dir, 'b'), b)
    const [a0, a1, a2] = readsOf(join(dir, 'a'), a, [2000, 2000, 2000])
    const [b0] = readsOf(join(dir, 'b'), b, [3000])
    const out = run([a0!, b0!, { type: 'lstat', path: join(dir, 'a') }, a2!, a1!, { type: 'read', path: join(dir, 'missing'), offset: 0, size: 10, id: a0!.id }])
    expect(out[0]).toMatchObject({ kind: 'ok' })
    expect(out[1]).toMatchObject({ kind: 'ok' })
    expect(out[2]).toMatchObject({ kind: 'file', size: 8000 })
    expect(out[3]).toMatchObject({ kind: 'ok' })
    expect(out[4]).toMatchObject({ kind: 'ok' })
    expect(out[5]).toHaveProperty('error')
  })
})
