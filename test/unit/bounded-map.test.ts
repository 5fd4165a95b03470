import { describe, expect, it } from 'vitest'
import { BoundedMap } from '../../agent/core/bounded-map.js'

describe('BoundedMap', () => {
  it('never holds more than max entries, and keeps what is in use', () => {
    const m = new BoundedMap<string, number>(100)
    for (let i = 0; i < 10_000; i++) {
      m.set(`k${i}`, i)
      // one key is read all the time: it is never the one forgotten
      expect(m.get('k0')).toBe(0)
      expect(m.size).toBeLessThanOrEqual(100)
    }
    expect(m.get('k9999')).toBe(9999)
    expect(m.get('k5000')).toBeUndefined()
  })

  it('holds a key once: set again or read from the older generation, it is counted once', () => {
    const m = new BoundedMap<string, number>(4)
    m.set('a', 1)
    m.set('b', 2) // current holds 2 = half: it becomes the previous generation
    expect(m.size).toBe(2)
    m.set('a', 3)
    expect(m.size).toBe(2)
    expect(m.get('a')).toBe(3)
    expect(m.get('b')).toBe(2) // moved back: still one entry
    expect(m.size).toBe(2)
    expect(m.delete('a')).toBe(true)
    expect(m.has('a')).toBe(false)
    expect(m.delete('a')).toBe(false)
    m.clear()
    expect(m.size).toBe(0)
  })

  it('keeps null values (a known absence) apart from unknown keys; max 0 keeps nothing', () => {
    const m = new BoundedMap<string, null | number>(10)
    m.set('none', null)
    expect(m.get('none')).toBeNull()
    expect(m.get('other')).toBeUndefined()
    const off = new BoundedMap<string, number>(0)
    off.set('a', 1)
    expect(off.size).toBe(0)
    expect(off.get('a')).toBeUndefined()
  })
})
