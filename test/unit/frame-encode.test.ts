import { describe, expect, it } from 'vitest'
import { chunkIdOf } from '../../protocol/chunk-id.js'
import { encodeUvarint } from '../../protocol/codec.js'
import { encodeFrame, frameBytes, joinFrames } from '../../protocol/frame-encode.js'
import { MAX_CHUNK_SIZE } from '../../protocol/limits.js'
import { decodeMessage, encodeMessage, type Message } from '../../protocol/messages.js'
import { MAX_BATCH_RAW_BYTES, MAX_DELTA_TARGET_BYTES } from '../../protocol/wire-limits.js'

/** The frame as built before: the canonical payload, then a copy behind its length prefix. */
function plainFrame (msg: Message): Buffer {
  const payload = encodeMessage(msg)
  return Buffer.concat([encodeUvarint(payload.byteLength), payload])
}

const bytesOf = (n: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 31 + 7) & 0xff)
// every msgpack bin header size (bin8, bin16, bin32) and both sides of each boundary, and of the splice threshold
const SIZES = [0, 1, 1023, 1024, 255 + 1024, 0xff, 0x100, 0xffff, 0x10000, 200_000, MAX_CHUNK_SIZE]

describe('encodeFrame', () => {
  it('gives the same bytes as prefixing encodeMessage, for chunk-carrying messages of every size', () => {
    for (const n of SIZES) {
      const bytes = bytesOf(n)
      const id = chunkIdOf(bytes)
      const messages: Message[] = [{ type: 'BLOCK', id, bytes }]
      if (n <= MAX_DELTA_TARGET_BYTES) messages.push({ type: 'DELTA', key: id, bytes })
      // a batch's payload is at most its raw size, at most MAX_BATCH_RAW_BYTES
      if (n <= MAX_BATCH_RAW_BYTES) messages.push({ type: 'BLOCKS', codec: 'br', entries: [{ id, size: MAX_BATCH_RAW_BYTES - 1 }, { id: chunkIdOf(Uint8Array.of(1)), size: 1 }], payload: bytes })
      for (const msg of messages) {
        const encoded = encodeFrame(msg)
        const plain = plainFrame(msg)
        expect(Buffer.from(frameBytes(encoded)).equals(plain), `${msg.type} of ${n} bytes`).toBe(true)
        expect(encoded.payloadBytes).toBe(encodeMessage(msg).byteLength)
        expect(encoded.wireBytes).toBe(plain.byteLength)
      }
    }
  })

  it('frames other messages the plain way, and what it frames decodes back', () => {
    const id = chunkIdOf(Uint8Array.of(9))
    const want: Message = { type: 'WANT', ids: [id] }
    expect(Buffer.from(frameBytes(encodeFrame(want))).equals(plainFrame(want))).toBe(true)
    const block: Message = { type: 'BLOCK', id, bytes: bytesOf(70_000) }
    const encoded = encodeFrame(block)
    // the chunk is not copied: it is the frame's second part, the very same array
    expect(encoded.parts).toHaveLength(2)
    expect(encoded.parts[1]).toBe(block.bytes)
    const frame = frameBytes(encoded)
    const { payloadBytes } = encoded
    const decoded = decodeMessage(frame.subarray(frame.byteLength - payloadBytes))
    expect(decoded.type).toBe('BLOCK')
    expect(decoded.type === 'BLOCK' && Buffer.from(decoded.bytes).equals(Buffer.from(block.bytes))).toBe(true)
  })
})

describe('joinFrames', () => {
  it('puts frames back to back as one piece, payloads counted together; one frame is returned as it is', () => {
    const msgs: Message[] = [{ type: 'DELTA_NONE', count: 3 }, { type: 'DELTA', key: chunkIdOf(bytesOf(5)), bytes: bytesOf(2000) }, { type: 'DONT_HAVE', id: chunkIdOf(bytesOf(6)) }]
    const frames = msgs.map(encodeFrame)
    const joined = joinFrames(frames)
    expect(Buffer.from(frameBytes(joined)).equals(Buffer.concat(msgs.map(plainFrame)))).toBe(true)
    expect(joined.wireBytes).toBe(Buffer.concat(msgs.map(plainFrame)).byteLength)
    expect(joined.payloadBytes).toBe(frames.reduce((n, f) => n + f.payloadBytes, 0))
    expect(joinFrames([frames[0]!])).toBe(frames[0])
  })
})
