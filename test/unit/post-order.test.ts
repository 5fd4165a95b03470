import { describe, expect, it } from 'vitest'
import { PostOrderRunner } from '../../agent/versions/post-order.js'

const tick = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

describe('PostOrderRunner', () => {
  it('runs a directory step only after every step inside it, subtrees included, and bounds concurrency', async () => {
    // 4: a directory waiting for its entries holds a place too (a/b while f1 and f2 run)
    const runner = new PostOrderRunner(4)
    const log: string[] = []
    let running = 0
    let peak = 0
    const step = (name: string, ms: number) => async (): Promise<void> => {
      running++
      peak = Math.max(peak, running)
      await tick(ms)
      log.push(name)
      running--
    }
    runner.enter() // a
    await runner.file(step('a/f1', 30))
    runner.enter() // a/b
    await runner.file(step('a/b/f2', 40))
    await runner.file(step('a/b/f3', 5))
    await runner.leave(step('a/b', 1))
    await runner.file(step('a/f4', 1))
    await runner.leave(step('a', 1))
    runner.enter() // c: empty
    await runner.leave(step('c', 1))
    await runner.settle()
    expect(peak).toBeLessThanOrEqual(4)
    expect(log).toHaveLength(7)
    const at = (name: string): number => log.indexOf(name)
    expect(at('a/b')).toBeGreaterThan(at('a/b/f2'))
    expect(at('a/b')).toBeGreaterThan(at('a/b/f3'))
    for (const inside of ['a/f1', 'a/b/f2', 'a/b/f3', 'a/b', 'a/f4']) expect(at('a')).toBeGreaterThan(at(inside))
    // steps overlapped: the short f4 did not wait for the long f1 and f2
    expect(at('a/f4')).toBeLessThan(at('a/f1'))
  })

  it('stops taking work after a failure, waits for what runs, and throws the failure from settle()', async () => {
    const runner = new PostOrderRunner(2)
    let finished = 0
    runner.enter()
    await runner.file(async () => { await tick(30); finished++ })
    await runner.file(async () => { throw new Error('disk on fire') })
    await tick(5)
    await expect(runner.file(async () => { finished += 100 })).rejects.toThrow('disk on fire')
    let dirRan = false
    await expect(runner.leave(async () => { dirRan = true })).rejects.toThrow('disk on fire')
    await expect(runner.settle()).rejects.toThrow('disk on fire')
    expect(finished).toBe(1)
    expect(dirRan).toBe(false)
  })
})
