import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { DurabilityPlan, syncFsViaCommand } from '../../agent/fs/durability.js'

const dirs: string[] = []
afterEach(async () => { for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true }) })

async function tree (files: number): Promise<{ dir: string, paths: string[] }> {
  const dir = await mkdtemp(join(tmpdir(), 'deltamesh-durable-'))
  dirs.push(dir)
  await mkdir(join(dir, 'sub'))
  const paths: string[] = []
  for (let i = 0; i < files; i++) { const p = join(dir, 'sub', `f${i}`); await writeFile(p, `x${i}`); paths.push(p) }
  return { dir, paths }
}

describe('DurabilityPlan', () => {
  it('fsyncs a short list one by one and never flushes the whole filesystem for it', async () => {
    const { dir, paths } = await tree(5)
    const plan = new DurabilityPlan(8)
    for (const p of paths) plan.add(p, false)
    plan.add(join(dir, 'sub'), true)
    const calls: string[] = []
    const r = await plan.flush(dir, async root => { calls.push(root) }, async () => { calls.push('all') })
    expect(r).toEqual({ how: 'fsync' })
    expect(calls).toEqual([])
    expect(plan.entries).toBe(6)
  })

  it('past its bound keeps no list and flushes the filesystem once', async () => {
    const { dir, paths } = await tree(12)
    const plan = new DurabilityPlan(8)
    for (const p of paths) plan.add(p, false)
    expect(plan.needsFilesystemSync).toBe(true)
    const calls: string[] = []
    const r = await plan.flush(dir, async root => { calls.push(root) }, async () => { calls.push('all') })
    expect(r).toEqual({ how: 'syncfs' })
    expect(calls).toEqual([dir])
  })

  it('a failing syncfs falls back to fsyncing everything and says why', async () => {
    const { dir, paths } = await tree(12)
    const plan = new DurabilityPlan(8)
    for (const p of paths) plan.add(p, false)
    let all = 0
    const r = await plan.flush(dir, async () => { throw new Error('no syncfs here') }, async () => { all++ })
    expect(r.how).toBe('fsync-all')
    expect((r.syncFsError as Error).message).toBe('no syncfs here')
    expect(all).toBe(1)
  })

  it('an fsync that fails (the entry vanished) rejects: nothing is reported durable that was not flushed', async () => {
    const { dir } = await tree(1)
    const plan = new DurabilityPlan(8)
    plan.add(join(dir, 'gone'), false)
    await expect(plan.flush(dir, async () => {}, async () => {})).rejects.toHaveProperty('code', 'ENOENT')
  })

  it.runIf(process.platform === 'linux')('syncFsViaCommand flushes a real directory; a missing one rejects', async () => {
    const { dir } = await tree(1)
    await syncFsViaCommand(dir)
    await expect(syncFsViaCommand(join(dir, 'missing'))).rejects.toThrow(/sync -f/)
  })
})
