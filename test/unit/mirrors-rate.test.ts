import { describe, expect, it } from 'vitest'
import { TokenBucket } from '../../agent/mirrors/server.js'

describe('the mirrors listener\'s request rate', () => {
  it('allows a burst of one second\'s worth, then the rate', () => {
    let now = 0
    const bucket = new TokenBucket(5, () => now)
    expect(Array.from({ length: 7 }, () => bucket.take())).toEqual([true, true, true, true, true, false, false])
    now += 200 // one token back
    expect([bucket.take(), bucket.take()]).toEqual([true, false])
    now += 10_000 // never more than the burst
    expect(Array.from({ length: 6 }, () => bucket.take()).filter(Boolean)).toHaveLength(5)
  })
})
