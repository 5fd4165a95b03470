// A message as it crosses the wire — uvarint length prefix, then its canonical msgpack payload. Chunk-
// carrying messages (BLOCK, BLOCKS, DELTA) end with a large byte string; packing it through msgpackr and
// then prefixing the result copied every served chunk twice (profiled: 5 % of a serving publisher's CPU,
// plus the garbage). Here the small head is packed with an empty byte string, whose 2-byte bin8 header is
// replaced by the real one, and the bytes are not copied at all: they are the frame's second part, and the
// stream sends both parts as one piece. Each chunk copied into a fresh frame buffer (and frames joined
// into another) was two copies and two ArrayBuffers per chunk on a serving publisher. The parts together are
// byte-identical to prefixing encodeMessage(msg) (tested for every bin header size).
import { encodeUvarint } from './codec.js'
import { encodeMessage, type Message } from './messages.js'

/** Below this a trailing byte string is packed the plain way: the copy saved is smaller than the extra pack. */
const MIN_SPLICED_BYTES = 1024

/** msgpack bin8 of length 0, as canonical msgpack ends a message whose last field is an empty byte string. */
const EMPTY_BIN = [0xc4, 0x00] as const

export interface EncodedFrame {
  /**
   * What crosses the wire, in order: the length prefix with the payload's head, then, for a message that
   * carries a large byte string, that string itself — not a copy: it must not change until it is sent.
   * A stream sends the parts as one piece (a list), so nothing is copied between the chunk read and Noise.
   */
  parts: Uint8Array[]
  /** Bytes on the wire: the parts together (length prefix included). */
  wireBytes: number
  /** The payload alone (what the frame counters count). */
  payloadBytes: number
}

/** The msgpack bin header of a byte string of length n (the smallest, as canonical msgpack requires). */
function binHeader (n: number): Uint8Array {
  if (n < 0x100) return Uint8Array.of(0xc4, n)
  if (n < 0x10000) return Uint8Array.of(0xc5, n >>> 8, n & 0xff)
  return Uint8Array.of(0xc6, n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff)
}

/** The message with its trailing byte string emptied, and that string; undefined for other messages. */
function splitTrailingBytes (msg: Message): { head: Message, tail: Uint8Array } | undefined {
  const empty = new Uint8Array(0)
  switch (msg.type) {
    case 'BLOCK': return { head: { ...msg, bytes: empty }, tail: msg.bytes }
    case 'BLOCKS': return { head: { ...msg, payload: empty }, tail: msg.payload }
    case 'DELTA': return { head: { ...msg, bytes: empty }, tail: msg.bytes }
    default: return undefined
  }
}

/** The length prefix of a payload of `payloadBytes` followed by `parts` (the payload, or its head), in one array. */
function prefixed (parts: Uint8Array[], payloadBytes: number): Uint8Array {
  const len = encodeUvarint(payloadBytes)
  let size = len.byteLength
  for (const p of parts) size += p.byteLength
  const front = Buffer.allocUnsafe(size)
  front.set(len, 0)
  let at = len.byteLength
  for (const p of parts) { front.set(p, at); at += p.byteLength }
  return front
}

/** Several frames as one piece of the stream (one write: one yamux and one Noise frame on the way out); nothing is copied. */
export function joinFrames (frames: EncodedFrame[]): EncodedFrame {
  if (frames.length === 1) return frames[0] as EncodedFrame
  const parts: Uint8Array[] = []
  let wireBytes = 0
  let payloadBytes = 0
  for (const f of frames) { parts.push(...f.parts); wireBytes += f.wireBytes; payloadBytes += f.payloadBytes }
  return { parts, wireBytes, payloadBytes }
}

/** The frame in one array (a copy when it has several parts): for callers that need contiguous bytes. */
export function frameBytes (encoded: EncodedFrame): Uint8Array {
  return encoded.parts.length === 1 ? encoded.parts[0] as Uint8Array : Buffer.concat(encoded.parts, encoded.wireBytes)
}

export function encodeFrame (msg: Message): EncodedFrame {
  const split = splitTrailingBytes(msg)
  if (split !== undefined && split.tail.byteLength >= MIN_SPLICED_BYTES) {
    const head = encodeMessage(split.head)
    if (head[head.byteLength - 2] === EMPTY_BIN[0] && head[head.byteLength - 1] === EMPTY_BIN[1]) {
      const headPart = head.subarray(0, head.byteLength - 2)
      const bin = binHeader(split.tail.byteLength)
      const payloadBytes = headPart.byteLength + bin.byteLength + split.tail.byteLength
      const front = prefixed([headPart, bin], payloadBytes)
      return { parts: [front, split.tail], wireBytes: front.byteLength + split.tail.byteLength, payloadBytes }
    }
  }
  const payload = encodeMessage(msg)
  const frame = prefixed([payload], payload.byteLength)
  return { parts: [frame], wireBytes: frame.byteLength, payloadBytes: payload.byteLength }
}
