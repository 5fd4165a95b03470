import { generateKeyPairSync } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { chunkIdOf } from '../../protocol/chunk-id.js'
import { encodeCanonical } from '../../protocol/codec.js'
import { InvalidMessageError } from '../../protocol/errors.js'
import { rawPublicKeyOf, signEnvelope } from '../../protocol/envelope.js'
import { CHUNKS_PROTOCOL, HEADS_PROTOCOL, STATUS_TOPIC, treeOfTopic, treeTopic } from '../../protocol/ids.js'
import { MAX_CHUNK_SIZE } from '../../protocol/limits.js'
import { decodeMessage, encodeMessage, type Message } from '../../protocol/messages.js'
import { MAX_HEADS, MAX_WANTS_PER_FRAME } from '../../protocol/wire-limits.js'

const id = (n: number): Uint8Array => chunkIdOf(Buffer.from(`chunk ${n}`))
const { privateKey } = generateKeyPairSync('ed25519')
const envelope = signEnvelope({
  tree: 'fedora/rawhide', seq: 3, label: 'Fedora-Rawhide-20260101.n.0', createdAtMs: 1_767_000_000_000,
  rootHash: id(0), rootSize: 100, publisherKey: rawPublicKeyOf(privateKey),
}, privateKey)

const samples: Message[] = [
  { type: 'WANT', ids: [id(1)] },
  { type: 'WANT', ids: Array.from({ length: MAX_WANTS_PER_FRAME }, (_, i) => id(i)) },
  { type: 'BLOCK', id: id(2), bytes: Buffer.from('hello') },
  { type: 'BLOCK', id: id(3), bytes: new Uint8Array(0) },
  { type: 'BLOCK', id: id(4), bytes: new Uint8Array(MAX_CHUNK_SIZE) },
  { type: 'DONT_HAVE', id: id(5) },
  { type: 'HEADS', heads: [], wantReply: true },
  { type: 'HEADS', heads: [{ tree: 'fedora/rawhide', seq: 3, complete: false, envelope: envelope.bytes }], wantReply: false },
  { type: 'ERROR', code: 'BUSY', message: 'at most 4 streams' },
  { type: 'ERROR', code: 'INVALID_REQUEST', message: '' },
]

/** Decoded bytes come back as Buffer; compare as plain byte arrays. */
function normalise (value: unknown): unknown {
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('hex')
  if (Array.isArray(value)) return value.map(normalise)
  if (value !== null && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, normalise(v)]))
  return value
}

function expectInvalid (bytes: Uint8Array): void {
  let error: unknown
  try { decodeMessage(bytes) } catch (err) { error = err }
  expect(error).toBeInstanceOf(InvalidMessageError)
}

describe('protocol ids', () => {
  it('names protocols and topics', () => {
    expect(CHUNKS_PROTOCOL).toBe('/deltamesh/chunks/1.0.0')
    expect(HEADS_PROTOCOL).toBe('/deltamesh/heads/1.0.0')
    expect(treeTopic('rhel-10/compose/BaseOS')).toBe('deltamesh/tree/1/rhel-10/compose/BaseOS')
    expect(treeOfTopic(treeTopic('a/b'))).toBe('a/b')
    expect(treeOfTopic(STATUS_TOPIC)).toBeUndefined()
    expect(treeOfTopic('deltamesh/tree/1/../etc')).toBeUndefined()
    expect(() => treeTopic('../x')).toThrow()
  })
})

describe('wire messages', () => {
  it.each(samples.map(m => [m.type, m] as const))('%s round-trips', (_type, msg) => {
    const bytes = encodeMessage(msg)
    expect(normalise(decodeMessage(bytes))).toEqual(normalise(msg))
    // canonical: re-encoding the decoded message gives the same bytes
    expect(Buffer.from(encodeMessage(decodeMessage(bytes))).equals(Buffer.from(bytes))).toBe(true)
  })

  const malformed: Array<[string, unknown]> = [
    ['unknown type', ['HAVE', [id(1)]]],
    ['lower-case type', ['want', [id(1)]]],
    ['type not a string', [1, [id(1)]]],
    ['not an array', { type: 'WANT' }],
    ['empty array', []],
    ['WANT with a 31-byte id', ['WANT', [id(1).subarray(0, 31)]]],
    ['WANT with a 33-byte id', ['WANT', [Buffer.concat([id(1), Buffer.from([0])])]]],
    ['WANT with a string id', ['WANT', ['ab'.repeat(16)]]],
    ['WANT empty batch', ['WANT', []]],
    ['WANT oversize batch', ['WANT', Array.from({ length: MAX_WANTS_PER_FRAME + 1 }, (_, i) => id(i))]],
    ['WANT extra field', ['WANT', [id(1)], 0]],
    ['BLOCK oversize', ['BLOCK', id(1), new Uint8Array(MAX_CHUNK_SIZE + 1)]],
    ['BLOCK bytes as string', ['BLOCK', id(1), 'hello']],
    ['BLOCK short id', ['BLOCK', id(1).subarray(1), Buffer.from('x')]],
    ['BLOCK missing bytes', ['BLOCK', id(1)]],
    ['DONT_HAVE short id', ['DONT_HAVE', id(1).subarray(0, 31)]],
    ['HEADS entries not a list', ['HEADS', 'x', false]],
    ['HEADS too many', ['HEADS', Array.from({ length: MAX_HEADS + 1 }, (_, i) => [`t${i}`, 1, true, envelope.bytes]), false]],
    ['HEADS bad tree name', ['HEADS', [['../etc', 1, true, envelope.bytes]], false]],
    ['HEADS duplicate tree', ['HEADS', [['a', 1, true, envelope.bytes], ['a', 2, true, envelope.bytes]], false]],
    ['HEADS seq 0', ['HEADS', [['a', 0, true, envelope.bytes]], false]],
    ['HEADS seq float', ['HEADS', [['a', 1.5, true, envelope.bytes]], false]],
    ['HEADS complete not boolean', ['HEADS', [['a', 1, 1, envelope.bytes]], false]],
    ['HEADS oversize envelope', ['HEADS', [['a', 1, true, new Uint8Array(5000)]], false]],
    ['HEADS wantReply missing', ['HEADS', []]],
    ['ERROR unknown code', ['ERROR', 'TEAPOT', 'short and stout']],
    ['ERROR long message', ['ERROR', 'BUSY', 'x'.repeat(1000)]],
  ]

  it.each(malformed)('rejects %s', (_name, wire) => {
    const bytes = Array.isArray(wire) ? encodeCanonical(wire) : new Uint8Array([0x81, 0xa4, 0x74, 0x79, 0x70, 0x65, 0xa4, 0x57, 0x41, 0x4e, 0x54])
    expectInvalid(bytes)
  })

  it('rejects trailing garbage, truncation and non-msgpack', () => {
    const good = encodeMessage({ type: 'DONT_HAVE', id: id(1) })
    expectInvalid(Buffer.concat([good, Buffer.from([0x00])]))
    expectInvalid(Buffer.concat([good, good]))
    expectInvalid(good.subarray(0, good.length - 1))
    expectInvalid(new Uint8Array(0))
    expectInvalid(Buffer.from([0xc1]))
  })

  it('refuses to encode what it would reject', () => {
    expect(() => encodeMessage({ type: 'WANT', ids: [] })).toThrow(InvalidMessageError)
    expect(() => encodeMessage({ type: 'DONT_HAVE', id: new Uint8Array(31) })).toThrow(InvalidMessageError)
  })

  it('property: any valid WANT/BLOCK/DONT_HAVE round-trips; any single-byte corruption never throws anything but InvalidMessageError', () => {
    const idArb = fc.uint8Array({ minLength: 32, maxLength: 32 })
    const msgArb: fc.Arbitrary<Message> = fc.oneof(
      fc.array(idArb, { minLength: 1, maxLength: 20 }).map(ids => ({ type: 'WANT' as const, ids })),
      fc.tuple(idArb, fc.uint8Array({ maxLength: 300 })).map(([i, bytes]) => ({ type: 'BLOCK' as const, id: i, bytes })),
      idArb.map(i => ({ type: 'DONT_HAVE' as const, id: i })),
    )
    fc.assert(fc.property(msgArb, fc.nat(), fc.integer({ min: 1, max: 255 }), (msg, pos, flip) => {
      const bytes = encodeMessage(msg)
      expect(normalise(decodeMessage(bytes))).toEqual(normalise(msg))
      const bad = Buffer.from(bytes)
      const at = pos % bad.length
      bad[at] = (bad[at] as number) ^ flip
      try { decodeMessage(bad) } catch (err) { expect(err).toBeInstanceOf(InvalidMessageError) }
    }), { numRuns: 300 })
  })
})
