import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Worker } from 'node:worker_threads'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { chunkFile } from '../../agent/chunk/chunker.js'
import { ChunkerPool, verifyRuns } from '../../agent/chunk/pool.js'
import type { PlacedChunk } from '../../agent/store/types.js'
import type { ChunkingParams } from '../../protocol/manifest.js'

import { pseudoRandom } from '../helpers/bytes.js'

const describeChunks = (chunks: PlacedChunk[]): string[] => chunks.map(c => `${c.offset}+${c.size}:${Buffer.from(c.id).toString('hex')}`)
const GEAR: ChunkingParams = { algorithm: 'gear', avgBits: 15, minSize: 16 * 1024, maxSize: 256 * 1024 }
const RABIN: ChunkingParams = { ...GEAR, algorithm: 'rabin' }

/** Reaches into the pool to kill a worker as a crash would; the test of the replacement logic needs it. */
function workersOf (pool: ChunkerPool): Worker[] {
  return (pool as unknown as { slots: Array<{ worker: Worker }> }).slots.map(s => s.worker)
}

describe('ChunkerPool', () => {
  let dir: string
  const files: Record<string, string> = {}
  let pool: ChunkerPool

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'deltamesh-pool-'))
    const contents: Record<string, Uint8Array> = {
      empty: new Uint8Array(0),
      tiny: Uint8Array.of(1, 2, 3),
      small: pseudoRandom(300_000, 1),
      medium: pseudoRandom(3 * 1024 * 1024 + 17, 2),
      // Above the pool's split threshold (set low below): cut in segments by both workers. The zero run at an
      // unaligned segment start forces the re-cut path; the random part exercises ordinary stitching.
      large: (() => {
        const b = new Uint8Array(24 * 1024 * 1024 + 12_345)
        b.set(pseudoRandom(10 * 1024 * 1024, 3))
        b.set(pseudoRandom(4 * 1024 * 1024, 4), 20 * 1024 * 1024)
        return b
      })(),
    }
    for (const [name, bytes] of Object.entries(contents)) {
      files[name] = join(dir, name)
      await writeFile(files[name], bytes)
    }
    pool = new ChunkerPool({ size: 2, splitThreshold: 8 * 1024 * 1024 })
  })

  afterAll(async () => {
    await pool.close()
    await rm(dir, { recursive: true, force: true })
  })

  it.each([GEAR, RABIN])('gives the same chunks as chunking in this thread ($algorithm)', async (params) => {
    const names = Object.keys(files)
    const viaPool = await Promise.all(names.map(async n => await pool.chunkFile(files[n]!, params)))
    for (const [i, n] of names.entries()) {
      const inThread = await chunkFile(files[n]!, params)
      expect(describeChunks(viaPool[i]!), n).toEqual(describeChunks(inThread))
    }
    expect(viaPool[0]).toEqual([])
    expect(viaPool[names.indexOf('large')]!.length).toBeGreaterThan(100)
  })

  it('verifies a file against its chunks, split across workers when large, and stops at a mismatch', async () => {
    for (const name of ['empty', 'tiny', 'small', 'large']) {
      const chunks = await chunkFile(files[name]!, GEAR)
      expect(await pool.verifyFile(files[name]!, chunks), name).toBe(true)
    }
    const large = await chunkFile(files.large!, GEAR)
    expect(verifyRuns(large, 2, 8 * 1024 * 1024)).toHaveLength(2) // both workers take a run
    // one wrong id in the first run, one in the last: either makes the whole file a mismatch
    for (const at of [3, large.length - 2]) {
      const wrong = large.map((c, i) => i === at ? { ...c, id: Buffer.alloc(32, 7) } : c)
      expect(await pool.verifyFile(files.large!, wrong), `wrong id at ${at}`).toBe(false)
    }
    // a chunk list one chunk short: the file has bytes after its last chunk
    expect(await pool.verifyFile(files.large!, large.slice(0, -1))).toBe(false)
    expect(await pool.verifyFile(files.small!, (await chunkFile(files.medium!, GEAR)))).toBe(false)
    await expect(pool.verifyFile(join(dir, 'missing'), large)).rejects.toMatchObject({ code: 'ENOENT' })
    await expect(pool.verifyFile(files.large!, large, AbortSignal.abort())).rejects.toHaveProperty('name', 'AbortError')
  })

  it('cuts verify runs at chunk boundaries into about equal bytes', () => {
    const chunks = Array.from({ length: 10 }, (_, i) => ({ id: Buffer.alloc(32, i), size: 100 }))
    expect(verifyRuns(chunks, 2, 500)).toEqual([{ from: 0, to: 5, start: 0 }, { from: 5, to: 10, start: 500 }])
    expect(verifyRuns(chunks, 3, 500).map(r => r.to - r.from)).toEqual([4, 3, 3])
    expect(verifyRuns(chunks, 2, 1001)).toEqual([{ from: 0, to: 10, start: 0 }]) // below the threshold
    expect(verifyRuns(chunks.slice(0, 1), 2, 0)).toEqual([{ from: 0, to: 1, start: 0 }])
  })

  it('passes file errors through with their code', async () => {
    await expect(pool.chunkFile(join(dir, 'missing'), GEAR)).rejects.toMatchObject({ code: 'ENOENT' })
  })

  it('aborts queued and running jobs, and keeps working afterwards', async () => {
    await expect(pool.chunkFile(files.medium!, GEAR, AbortSignal.abort())).rejects.toHaveProperty('name', 'AbortError')
    const controller = new AbortController()
    const jobs = [1, 2, 3, 4].map(async () => await pool.chunkFile(files.medium!, RABIN, controller.signal))
    setTimeout(() => controller.abort(), 5)
    const results = await Promise.allSettled(jobs)
    for (const r of results) expect(r.status === 'rejected' && (r.reason as Error).name).toBe('AbortError')
    // A split job: every segment is cancelled.
    const split = new AbortController()
    const big = pool.chunkFile(files.large!, RABIN, split.signal)
    setTimeout(() => split.abort(), 5)
    await expect(big).rejects.toHaveProperty('name', 'AbortError')
    expect(describeChunks(await pool.chunkFile(files.small!, GEAR))).toEqual(describeChunks(await chunkFile(files.small!, GEAR)))
  })

  it('fails the job of a worker that dies with ChunkerWorkerError, and replaces the worker', async () => {
    const local = new ChunkerPool({ size: 1 })
    try {
      const job = local.chunkFile(files.medium!, RABIN)
      const [worker] = workersOf(local) // started by the job
      setTimeout(() => { void worker!.terminate() }, 20)
      await expect(job).rejects.toHaveProperty('name', 'ChunkerWorkerError')
      expect(workersOf(local)[0]).not.toBe(worker)
      expect(describeChunks(await local.chunkFile(files.small!, GEAR))).toEqual(describeChunks(await chunkFile(files.small!, GEAR)))
    } finally {
      await local.close()
    }
  })

  it('starts workers with the first job, stops them when idle, and starts them again for the next', async () => {
    const local = new ChunkerPool({ size: 2, idleMs: 50 })
    try {
      expect(local.workers).toBe(0)
      const first = await local.chunkFile(files.small!, GEAR)
      // read before any other await: the idle timer may fire at the next turn of the event loop
      const stopped = workersOf(local)
      expect(stopped).toHaveLength(2)
      expect(describeChunks(first)).toEqual(describeChunks(await chunkFile(files.small!, GEAR)))
      await new Promise(resolve => setTimeout(resolve, 200))
      expect(local.workers).toBe(0)
      expect(describeChunks(await local.chunkFile(files.medium!, RABIN))).toEqual(describeChunks(await chunkFile(files.medium!, RABIN)))
      expect(workersOf(local).some(w => stopped.includes(w))).toBe(false)
    } finally {
      await local.close()
    }
  })

  it('bounds its queue and refuses work once closed', async () => {
    const local = new ChunkerPool({ size: 1, maxQueue: 1, jobsPerWorker: 1 })
    const running = local.chunkFile(files.medium!, GEAR)
    const queued = local.chunkFile(files.small!, GEAR)
    await expect(local.chunkFile(files.small!, GEAR)).rejects.toHaveProperty('name', 'ChunkerQueueFullError')
    await Promise.all([running, queued])
    await local.close()
    await expect(local.chunkFile(files.small!, GEAR)).rejects.toHaveProperty('name', 'ChunkerPoolClosedError')
  })
})
