import { describe, expect, it } from 'vitest'
import { Uint8ArrayList } from 'uint8arraylist'
import type { Stream } from '@libp2p/interface'
import { FrameStream, frameLength } from '../../agent/net/frames.js'
import { encodeUvarint } from '../../protocol/codec.js'
import { encodeMessage, type Message } from '../../protocol/messages.js'
import { FakeStream } from '../helpers/fake-stream.js'

/** uint8arraylist is @libp2p/utils' own copy (another version than the top-level one): same shape, other type. */
const asBuffered = (list: Uint8ArrayList): Parameters<typeof frameLength>[0] => list as unknown as Parameters<typeof frameLength>[0]
const hex = (m: Message): string => Buffer.from(encodeMessage(m)).toString('hex')


describe('frame length prefix', () => {
  it('reads a uvarint from bytes and from a list whose prefix spans its arrays', () => {
    for (const n of [0, 1, 127, 128, 300, 16_383, 16_384, 1_048_576, 2 ** 40]) {
      const prefix = encodeUvarint(n)
      expect(frameLength(Buffer.concat([prefix, Buffer.of(9, 9)]))).toBe(n)
      const list = new Uint8ArrayList()
      for (const b of prefix) list.append(Uint8Array.of(b))
      list.append(Uint8Array.of(9))
      expect(frameLength(asBuffered(list))).toBe(n)
    }
  })

  it('throws one preallocated RangeError (the decoder\'s "need more bytes") while the prefix is incomplete', () => {
    let first: unknown
    try { frameLength(asBuffered(new Uint8ArrayList())) } catch (err) { first = err }
    expect(first).toBeInstanceOf(RangeError)
    expect(() => frameLength(Uint8Array.of(0x80, 0x80))).toThrow(first as Error)
    expect(() => frameLength(new Uint8Array(0))).toThrow(first as Error)
  })

  it('refuses prefixes no honest peer sends: overlong forms and more than 8 bytes (not a RangeError)', () => {
    for (const bad of [[0x85, 0x00], [0x80, 0x80, 0x00], new Array(8).fill(0xff)]) {
      let error: unknown
      try { frameLength(Uint8Array.from(bad)) } catch (err) { error = err }
      expect(error).toBeInstanceOf(Error)
      expect(error).not.toBeInstanceOf(RangeError)
    }
  })

  it('FrameStream reads frames delivered a byte at a time, and several in one batch', async () => {
    const msgs: Message[] = [
      { type: 'WANT', ids: [new Uint8Array(32).fill(1)] },
      { type: 'BLOCK', id: new Uint8Array(32).fill(2), bytes: new Uint8Array(300).fill(7) },
      { type: 'DONT_HAVE', id: new Uint8Array(32).fill(3) },
    ]
    const wire = Buffer.concat(msgs.map(m => { const p = encodeMessage(m); return Buffer.concat([encodeUvarint(p.byteLength), p]) }))
    for (const pieces of [[...wire].map(b => Uint8Array.of(b)), [wire]]) {
      const stream = new FakeStream()
      const frames = new FrameStream(stream as unknown as Stream, { maxFrameBytes: 4096, maxBufferBytes: 8192 })
      for (const p of pieces) stream.deliver(p)
      stream.dispatchEvent(new Event('remoteCloseWrite'))
      const got: Message[] = []
      for (let m = await frames.read(); m !== undefined; m = await frames.read()) got.push(m)
      expect(got.map(hex)).toEqual(msgs.map(hex))
    }
  })

  it('FrameStream turns an overlong prefix into InvalidMessageError', async () => {
    const stream = new FakeStream()
    const frames = new FrameStream(stream as unknown as Stream, { maxFrameBytes: 4096, maxBufferBytes: 8192 })
    stream.deliver(Uint8Array.of(0x81, 0x00, 0x90))
    await expect(frames.read()).rejects.toHaveProperty('name', 'InvalidMessageError')
  })
})
