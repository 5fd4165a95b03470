import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { FsBatch } from '../../agent/fs/fs-batch.js'
import { keepYoungGenerationSmall } from '../../agent/core/heap.js'

// An idle agent holds no worker thread (issue 18): the filesystem worker starts with the first step, stops
// idleMs after the last and starts again for the next; the chunker pool's are in chunker-pool.test.ts.

const dirs: string[] = []
const batches: FsBatch[] = []
afterEach(async () => {
  for (const b of batches.splice(0)) await b.close()
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true })
})

const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

async function waitUntil (predicate: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error('timed out')
    await sleep(10)
  }
}

describe('FsBatch worker lifetime', () => {
  it('starts the worker with the first step, stops it when idle, and starts it again for the next step', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'deltamesh-idle-'))
    dirs.push(dir)
    const fs = new FsBatch({ idleMs: 50 })
    batches.push(fs)
    expect(fs.running).toBe(false)
    await fs.run({ type: 'dir', path: join(dir, 'a') })
    expect(fs.running).toBe(true)
    await waitUntil(() => !fs.running)
    // transparently again, and the idle timer of the first worker does not stop the second under a busy batch
    const steps = Array.from({ length: 20 }, async (_, i) => await fs.run({ type: 'dir', path: join(dir, `b${i}`) }))
    expect(fs.running).toBe(false) // steps wait for the next turn of the event loop, together
    await Promise.all(steps)
    expect(fs.running).toBe(true) // started by the flush after run(), stopped only idleMs after the last reply
    await waitUntil(() => !fs.running)
  })

  it('keeps the worker while steps arrive closer together than idleMs', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'deltamesh-idle-'))
    dirs.push(dir)
    const fs = new FsBatch({ idleMs: 300 })
    batches.push(fs)
    for (let i = 0; i < 5; i++) {
      await fs.run({ type: 'dir', path: join(dir, `c${i}`) })
      expect(fs.running).toBe(true)
      await sleep(100)
    }
  })
})

describe('keepYoungGenerationSmall', () => {
  it('leaves a young generation sized by node options to the user', () => {
    expect(keepYoungGenerationSmall(['--max-semi-space-size=8'], '')).toBe(false)
    expect(keepYoungGenerationSmall([], '--max-old-space-size=512 --max-semi-space-size=8')).toBe(false)
    expect(keepYoungGenerationSmall(['--import', 'x'], '--max-old-space-size=512')).toBe(true)
  })
})
