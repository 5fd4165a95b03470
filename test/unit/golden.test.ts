// Golden vectors: every byte format deltamesh writes or sends, as fixed bytes under test/fixtures/golden/ (see
// its README). Each test decodes a fixture, checks the values it holds, and re-encodes them byte for byte, so
// a change to any format (or to the msgpack encoder under it) fails here instead of passing unnoticed between
// two encodings made by the same code. By default the fixtures are only read; UPDATE_GOLDEN=1 rewrites them
// from the values below (a deliberate format change: review the diff of the .hex files).
import { createPrivateKey } from 'node:crypto'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { brotliDecompressSync } from 'node:zlib'
import { describe, expect, it } from 'vitest'
import { chunkIdOf, type ChunkId } from '../../protocol/chunk-id.js'
import { decodeUntrusted, decodeUvarint, encodeCanonical, encodeUvarint } from '../../protocol/codec.js'
import { openEnvelope, rawPublicKeyOf, signEnvelope, type EnvelopeFields } from '../../protocol/envelope.js'
import { decodeRoot, encodeEntry, encodeHeader, encodeRoot, HOLE_CHUNK_ID, ManifestReader, ManifestWriter, type ManifestEntry, type ManifestHeader, type ManifestRoot } from '../../protocol/manifest.js'
import { bytesToPath, pathToBytes } from '../../protocol/paths.js'
import { decodeMessage, encodeMessage, type Message, type MessageType } from '../../protocol/messages.js'
import { encodeFrame, frameBytes } from '../../protocol/frame-encode.js'
import { frameLength } from '../../agent/net/frames.js'
import { compressBatch, decompressBatch } from '../../protocol/batch-codec.js'
import { decodeSiteStatus, encodeSiteStatus, type SiteStatus } from '../../protocol/site-status.js'
import { applyDelta, deltaKeyOf, encodeDelta } from '../../protocol/delta.js'
import { encodeDeltaFromSignatures, signatureOf } from '../../protocol/signature-delta.js'

const FIXTURES = fileURLToPath(new URL('../fixtures/golden', import.meta.url))
const UPDATE = process.env.UPDATE_GOLDEN === '1'

/** The fixture's bytes. With UPDATE_GOLDEN=1 it is first rewritten from make(); otherwise make() is never called. */
function golden (name: string, make: () => Uint8Array): Buffer {
  const path = join(FIXTURES, name)
  if (UPDATE) {
    mkdirSync(FIXTURES, { recursive: true })
    writeFileSync(path, (hex(make()).match(/.{1,64}/g) ?? []).join('\n') + '\n')
  }
  const text = readFileSync(path, 'utf8').replace(/\s+/g, '')
  if (!/^([0-9a-f]{2})*$/.test(text)) throw new Error(`${name}: not lowercase hex`)
  return Buffer.from(text, 'hex')
}

function hex (bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex')
}

/** Byte strings as hex, recursively: decoded values compare with readable diffs whatever their Buffer class. */
function plain (value: unknown): unknown {
  if (value instanceof Uint8Array) return hex(value)
  if (Array.isArray(value)) return value.map(plain)
  if (value !== null && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plain(v)]))
  return value
}

/** Fixed bytes (xorshift32), defined here so that no shared helper can move a golden value. */
function fixedBytes (length: number, seed: number): Buffer {
  const out = Buffer.alloc(length)
  let s = seed >>> 0
  for (let i = 0; i < length; i++) {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0
    out[i] = s & 0xff
  }
  return out
}

/** A manifest's records: [uvarint length][msgpack value], one after the other. */
function records (bytes: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = []
  for (let at = 0; at < bytes.byteLength;) {
    const [length, prefix] = decodeUvarint(bytes, at) as [number, number]
    out.push(bytes.subarray(at, at + prefix + length))
    at += prefix + length
  }
  return out
}

function recordValue (record: Uint8Array): unknown[] {
  const [, prefix] = decodeUvarint(record, 0) as [number, number]
  return decodeUntrusted(record.subarray(prefix), 'record') as unknown[]
}

const T = 1_767_225_600_123 // 2026-01-01T00:00:00.123Z
const id = (s: string): ChunkId => chunkIdOf(Buffer.from(s))
const TREE = 'golden/tree-1'

// ---- manifest, format 2 ----
/** 'lat' and a lone 0xE9 (Latin-1 é): not UTF-8, held in memory as an escaped byte. */
const LATIN1 = bytesToPath(Uint8Array.of(0x6c, 0x61, 0x74, 0xe9))
const HEADER: ManifestHeader = { chunking: { algorithm: 'gear', avgBits: 15, minSize: 16384, maxSize: 262144 }, root: { mode: 0o755, mtimeMs: T, mtimeNs: 456_789 } }
const ENTRIES: ManifestEntry[] = [
  { type: 'dir', path: 'd', mode: 0o2750, mtimeMs: T, mtimeNs: 999_999 },
  { type: 'file', path: 'd/back\\slash', mode: 0o644, mtimeMs: T - 1000, size: 30000, chunks: [{ id: id('c1'), size: 20000 }, { id: id('c2'), size: 10000 }] },
  { type: 'file', path: 'd/hard', mode: 0o600, mtimeMs: T, mtimeNs: 1, size: 5, chunks: [{ id: id('hard'), size: 5 }], linkable: true },
  { type: 'file', path: 'd/hard-link', mode: 0o600, mtimeMs: T, mtimeNs: 1, size: 5, chunks: [{ id: id('hard'), size: 5 }], linkTo: 'd/hard' },
  { type: 'file', path: 'd/line\nfeed', mode: 0o755, mtimeMs: -86_400_000, size: 7, chunks: [{ id: id('line'), size: 7 }] },
  { type: 'file', path: 'd/sparse', mode: 0o644, mtimeMs: T, mtimeNs: 500_000, size: 4096 + 131072 + 100, chunks: [{ id: id('s1'), size: 4096 }, { id: HOLE_CHUNK_ID, size: 131072 }, { id: id('s2'), size: 100 }] },
  { type: 'symlink', path: 'd/to-latin', mtimeMs: T, mtimeNs: 7, target: `../${LATIN1}` },
  { type: 'file', path: 'empty', mode: 0o444, mtimeMs: 0, size: 0, chunks: [] },
  { type: 'file', path: LATIN1, mode: 0o644, mtimeMs: T, size: 3, chunks: [{ id: id('latin'), size: 3 }] },
]

function encodeManifest (header: ManifestHeader, entries: ManifestEntry[]): Buffer {
  const writer = new ManifestWriter(header)
  return Buffer.concat([writer.start(), ...entries.map(e => writer.write(e))])
}

const manifestV2 = (): Buffer => golden('manifest-v2.hex', () => encodeManifest(HEADER, ENTRIES))

// ---- manifest, format 1 (no longer written: built here from its record layout) ----
const V1_CHUNKING = ['rabin', 16, 16384, 262144]
const V1_ENTRIES: ManifestEntry[] = [
  { type: 'dir', path: 'a', mode: 0o755, mtimeMs: 1_700_000_000_000 },
  { type: 'file', path: 'a/b.rpm', mode: 0o644, mtimeMs: 1_700_000_000_123, size: 30, chunks: [{ id: id('x'), size: 10 }, { id: id('y'), size: 20 }] },
  { type: 'symlink', path: 'a/latest', mtimeMs: 1_700_000_000_000, target: 'b.rpm' },
  { type: 'file', path: 'a-z', mode: 0o600, mtimeMs: 5, size: 0, chunks: [] },
]

function v1Record (value: unknown[]): Buffer {
  const body = encodeCanonical(value)
  return Buffer.concat([encodeUvarint(body.byteLength), body])
}

function v1Value (e: ManifestEntry): unknown[] {
  switch (e.type) {
    case 'dir': return [0, e.path, e.mode, e.mtimeMs]
    case 'symlink': return [2, e.path, e.mtimeMs, e.target]
    case 'file': return [1, e.path, e.mode, e.mtimeMs, e.size, Buffer.concat(e.chunks.map(c => c.id)), e.chunks.map(c => c.size)]
  }
}

const encodeV1 = (entries: ManifestEntry[]): Buffer => Buffer.concat([v1Record(['deltamesh/manifest', 1, V1_CHUNKING]), ...entries.map(e => v1Record(v1Value(e)))])

// ---- root (of the format 2 manifest above, cut into 128-byte chunks) and envelope ----
function rootOf (manifest: Uint8Array): ManifestRoot {
  const chunks = []
  for (let at = 0; at < manifest.byteLength; at += 128) {
    const piece = manifest.subarray(at, Math.min(at + 128, manifest.byteLength))
    chunks.push({ id: chunkIdOf(piece), size: piece.byteLength })
  }
  const totalFileBytes = ENTRIES.reduce((n, e) => n + (e.type === 'file' ? e.size : 0), 0)
  return { manifestSize: manifest.byteLength, entryCount: ENTRIES.length, totalFileBytes, chunks }
}

const root = (): Buffer => golden('root.hex', () => encodeRoot(rootOf(manifestV2())))

/** A fixed ed25519 key: PKCS#8 DER prefix (RFC 8410) + the 32-byte seed 01 02 … 20. Ed25519 signs deterministically. */
const TEST_KEY = createPrivateKey({
  key: Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), Uint8Array.from({ length: 32 }, (_, i) => i + 1)]),
  format: 'der',
  type: 'pkcs8',
})

function envelopeFields (): EnvelopeFields {
  const rootBytes = root()
  return { tree: TREE, seq: 42, label: 'compose 2026-01-01.0', createdAtMs: T, rootHash: chunkIdOf(rootBytes), rootSize: rootBytes.byteLength, publisherKey: rawPublicKeyOf(TEST_KEY) }
}

const envelope = (): Buffer => golden('envelope.hex', () => signEnvelope(envelopeFields(), TEST_KEY).bytes)

// ---- deltas ----
const DELTA_BASE = Buffer.from(Array.from({ length: 64 }, (_, i) => `line ${String(i).padStart(4, '0')} of the base file\n`).join(''))
const DELTA_TARGET = Buffer.concat([DELTA_BASE.subarray(0, 700), Buffer.from('an inserted line\n'), DELTA_BASE.subarray(700, 1500), Buffer.from('EDITED'), DELTA_BASE.subarray(1506)])
const delta = (): Buffer => golden('delta.hex', () => encodeDelta(DELTA_BASE, DELTA_TARGET))

const SIG_BASE = fixedBytes(4096 + 100, 0x5eed)
const SIG_TARGET = Buffer.concat([SIG_BASE.subarray(0, 1500), fixedBytes(40, 7), SIG_BASE.subarray(1500)])

/** The delta's parts: its container fields, and its op stream (brotli's compressed bytes are brotli's, not ours). */
function deltaParts (bytes: Uint8Array): { head: unknown[], ops: Buffer } {
  const t = decodeUntrusted(bytes, 'delta') as unknown[]
  return { head: t.slice(0, 4), ops: brotliDecompressSync(t[4] as Uint8Array) }
}

// ---- messages: one fixture per type (a compile error here when a message type is added without one) ----
const BATCH = [Buffer.from('a'.repeat(3000)), Buffer.from('b'.repeat(2000)), Buffer.from('abc'.repeat(700))]
const MESSAGES: Record<Exclude<MessageType, 'BLOCKS'>, Array<[string, () => Message]>> = {
  WANT: [['msg-want.hex', () => ({ type: 'WANT', ids: [id('w1'), id('w2')] })]],
  BLOCK: [['msg-block.hex', () => ({ type: 'BLOCK', id: id('hello'), bytes: Buffer.from('hello') })]],
  DONT_HAVE: [['msg-dont-have.hex', () => ({ type: 'DONT_HAVE', id: id('gone') })]],
  HEADS: [['msg-heads.hex', () => ({ type: 'HEADS', heads: [{ tree: TREE, seq: 42, complete: true, envelope: envelope() }], wantReply: true })]],
  ERROR: [['msg-error.hex', () => ({ type: 'ERROR', code: 'TOO_MANY_WANTS', message: '4097 wants outstanding, limit 4096' })]],
  DELTA_WANT: [['msg-delta-want.hex', () => ({ type: 'DELTA_WANT', keys: [deltaKeyOf([id('c1')], [id('c3')]), deltaKeyOf([], [id('c4')])] })]],
  DELTA: [['msg-delta.hex', () => ({ type: 'DELTA', key: deltaKeyOf([id('c1')], [id('c3')]), bytes: delta() })]],
  DELTA_NONE: [['msg-delta-none.hex', () => ({ type: 'DELTA_NONE', count: 3 })]],
  HAVE: [
    ['msg-have.hex', () => ({ type: 'HAVE', have: { tree: TREE, seq: 42, ids: [id('h1'), id('h2')] } })],
    ['msg-have-beacon.hex', () => ({ type: 'HAVE', have: { tree: TREE, seq: 42, ids: [] } })],
  ],
}

const PEER_A = '12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK'
const PEER_B = 'QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N'
const STATUS: SiteStatus = {
  sentAtMs: T,
  name: 'brno (rack 2)',
  agentVersion: '0.1.0',
  startedAtMs: T - 3_600_000,
  totals: { bytesUp: 123_456_789_012, bytesDown: 42, rateUp: 1_250_000, rateDown: 0 },
  trees: [
    { name: TREE, currentSeq: 41, newestSeq: 42, held: [39, 40, 41], sync: { seq: 42, phase: 'fetching', bytesDone: 1000, bytesTotal: 5000, rateBps: 250_000, startedAtMs: T - 60_000 } },
    { name: 'other', held: [] },
  ],
  peers: [{ peerId: PEER_A, connected: true, rateUp: 10, rateDown: 20 }, { peerId: PEER_B, connected: false, rateUp: 0, rateDown: 0 }],
  links: [{ name: 'wan', limitUp: 1_000_000, rateUp: 900_000, rateDown: 3, peers: 2 }, { name: 'lan', rateUp: 0, rateDown: 0, peers: 0 }],
}

describe('golden fixtures', () => {
  it('manifest format 2: header and every entry kind, record by record; names travel as their bytes', () => {
    const bytes = manifestV2()
    const reader = new ManifestReader()
    const entries = reader.push(bytes)
    reader.end()
    expect(reader.format).toBe(2)
    expect(reader.header).toEqual(HEADER)
    expect(plain(entries)).toEqual(plain(ENTRIES))
    const recs = records(bytes)
    expect(recs).toHaveLength(1 + ENTRIES.length)
    expect(hex(encodeHeader(reader.header as ManifestHeader))).toBe(hex(recs[0] as Uint8Array))
    entries.forEach((e, i) => expect(hex(encodeEntry(e)), e.path).toBe(hex(recs[i + 1] as Uint8Array)))
    // the backslash, the newline and the lone 0xE9 are raw bytes on the wire (not escapes, not U+FFFD)
    expect(plain(recs.slice(1).map(r => recordValue(r)[1]))).toEqual(plain(ENTRIES.map(e => pathToBytes(e.path))))
    expect(hex(recordValue(recs[2] as Uint8Array)[1] as Uint8Array)).toBe(hex(Buffer.from('d/back\\slash')))
    expect(hex(recordValue(recs[5] as Uint8Array)[1] as Uint8Array)).toBe(hex(Buffer.from('d/line\nfeed')))
    expect(hex(recordValue(recs[9] as Uint8Array)[1] as Uint8Array)).toBe('6c6174e9')
    expect(hex(recordValue(recs[7] as Uint8Array)[4] as Uint8Array)).toBe(hex(Buffer.from('../lat')) + 'e9')
    expect(hex(encodeManifest(reader.header as ManifestHeader, entries))).toBe(hex(bytes))
  })

  it('manifest format 1 still decodes', () => {
    const bytes = golden('manifest-v1.hex', () => encodeV1(V1_ENTRIES))
    const reader = new ManifestReader()
    const entries = reader.push(bytes)
    reader.end()
    expect(reader.format).toBe(1)
    expect(reader.header).toEqual({ chunking: { algorithm: 'rabin', avgBits: 16, minSize: 16384, maxSize: 262144 } })
    expect(plain(entries)).toEqual(plain(V1_ENTRIES))
    expect(hex(encodeV1(entries))).toBe(hex(bytes))
  })

  it('root of a version', () => {
    const bytes = root()
    const manifest = manifestV2()
    const decoded = decodeRoot(bytes)
    expect(plain(decoded)).toEqual(plain(rootOf(manifest)))
    expect(decoded.chunks.map(c => c.size)).toEqual([128, 128, 128, 128, 128, 16])
    expect(manifest.byteLength).toBe(656)
    expect(hex(encodeRoot(decoded))).toBe(hex(bytes))
  })

  it('envelope signed with a fixed ed25519 key', () => {
    const bytes = envelope()
    const opened = openEnvelope(bytes) // verifies the signature against the key inside
    const { signature, bytes: openedBytes, ...fields } = opened
    expect(plain(fields)).toEqual(plain(envelopeFields()))
    expect(hex(fields.publisherKey)).toBe('79b5562e8fe654f94078b112e8a98ba7901f853ae695bed7e0e3910bad049664')
    expect(signature).toHaveLength(64)
    expect(hex(openedBytes)).toBe(hex(bytes))
    expect(hex(signEnvelope(fields, TEST_KEY).bytes)).toBe(hex(bytes))
  })

  it('every wire message type', () => {
    for (const [name, make] of Object.values(MESSAGES).flat()) {
      const bytes = golden(name, () => encodeMessage(make()))
      const decoded = decodeMessage(bytes)
      expect(plain(decoded), name).toEqual(plain(make()))
      expect(hex(encodeMessage(decoded)), name).toBe(hex(bytes))
    }
  })

  it('BLOCKS: entries and a brotli payload that inflates to the chunks', () => {
    const bytes = golden('msg-blocks.hex', () => encodeMessage({ type: 'BLOCKS', codec: 'br', entries: BATCH.map(b => ({ id: chunkIdOf(b), size: b.byteLength })), payload: compressBatch(Buffer.concat(BATCH)) }))
    const decoded = decodeMessage(bytes)
    if (decoded.type !== 'BLOCKS') throw new Error(decoded.type)
    expect(decoded.codec).toBe('br')
    expect(plain(decoded.entries)).toEqual(plain(BATCH.map(b => ({ id: chunkIdOf(b), size: b.byteLength }))))
    const total = BATCH.reduce((n, b) => n + b.byteLength, 0)
    expect(hex(decompressBatch('br', decoded.payload, total))).toBe(hex(Buffer.concat(BATCH)))
    expect(hex(encodeMessage(decoded))).toBe(hex(bytes))
  })

  it('frames: uvarint length, then the message (plain and spliced encodings)', () => {
    const cases: Array<[string, Message]> = [
      ['frame-error.hex', { type: 'ERROR', code: 'BUSY', message: 'try later' }],
      ['frame-block.hex', { type: 'BLOCK', id: chunkIdOf(fixedBytes(1500, 1)), bytes: fixedBytes(1500, 1) }],
    ]
    for (const [name, msg] of cases) {
      const bytes = golden(name, () => frameBytes(encodeFrame(msg)))
      const length = frameLength(bytes)
      const prefix = encodeUvarint(length).byteLength
      expect(prefix + length, name).toBe(bytes.byteLength)
      expect(plain(decodeMessage(bytes.subarray(prefix))), name).toEqual(plain(msg))
      expect(hex(frameBytes(encodeFrame(msg))), name).toBe(hex(bytes))
      expect(hex(Buffer.concat([encodeUvarint(length), encodeMessage(msg)])), name).toBe(hex(bytes))
    }
  })

  it('site status', () => {
    const bytes = golden('site-status.hex', () => encodeSiteStatus(STATUS))
    const decoded = decodeSiteStatus(bytes)
    expect(decoded).toEqual(STATUS)
    expect(hex(encodeSiteStatus(decoded))).toBe(hex(bytes))
  })

  it('delta: rebuilds its target; container and op stream are ours byte for byte', () => {
    const bytes = delta()
    expect(hex(applyDelta(DELTA_BASE, bytes, DELTA_TARGET.byteLength))).toBe(hex(DELTA_TARGET))
    const ops = golden('delta-ops.hex', () => deltaParts(encodeDelta(DELTA_BASE, DELTA_TARGET)).ops)
    const parts = deltaParts(bytes)
    expect(parts.head).toEqual(['DLT', 1, DELTA_TARGET.byteLength, ops.byteLength])
    expect(hex(parts.ops)).toBe(hex(ops))
    const again = deltaParts(encodeDelta(DELTA_BASE, DELTA_TARGET))
    expect(again.head).toEqual(parts.head)
    expect(hex(again.ops)).toBe(hex(ops))
    const key = golden('delta-key.hex', () => deltaKeyOf([id('c1'), id('c2')], [id('c3')]))
    expect(hex(deltaKeyOf([id('c1'), id('c2')], [id('c3')]))).toBe(hex(key))
  })

  it('signatures and a delta from signatures', () => {
    const signature = golden('signature.hex', () => signatureOf(SIG_BASE))
    expect(signature).toHaveLength(4 * 12)
    expect(hex(signatureOf(SIG_BASE))).toBe(hex(signature))
    const make = (): Uint8Array => encodeDeltaFromSignatures([{ size: SIG_BASE.byteLength, signature }], SIG_TARGET, 1 << 20) as Uint8Array
    const bytes = golden('sig-delta.hex', make)
    expect(hex(applyDelta(SIG_BASE, bytes, SIG_TARGET.byteLength))).toBe(hex(SIG_TARGET))
    const ops = golden('sig-delta-ops.hex', () => deltaParts(make()).ops)
    const parts = deltaParts(bytes)
    expect(parts.head).toEqual(['DLT', 1, SIG_TARGET.byteLength, ops.byteLength])
    expect(hex(parts.ops)).toBe(hex(ops))
    const again = deltaParts(make())
    expect(again.head).toEqual(parts.head)
    expect(hex(again.ops)).toBe(hex(ops))
  })
})
