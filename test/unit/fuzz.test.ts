import { generateKeyPairSync, sign } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import type { Stream } from '@libp2p/interface'
import { chunkIdOf } from '../../protocol/chunk-id.js'
import { encodeCanonical, encodeUvarint } from '../../protocol/codec.js'
import { DeltameshError } from '../../protocol/errors.js'
import { openEnvelope, rawPublicKeyOf, signEnvelope } from '../../protocol/envelope.js'
import { decodeManifest, decodeRoot, encodeRoot, ManifestReader, ManifestWriter, type ManifestEntry } from '../../protocol/manifest.js'
import { decodeMessage, encodeMessage, type Message } from '../../protocol/messages.js'
import { MAX_REQUEST_FRAME_BYTES, MAX_WANTS_PER_FRAME } from '../../protocol/wire-limits.js'
import { FrameStream } from '../../agent/net/frames.js'
import { prng } from '../../agent/demo/tree-gen.js'
import { FakeStream } from '../helpers/fake-stream.js'

// A deterministic mutation fuzzer for every decoder that takes bytes from a peer or from a manifest: a
// seeded PRNG, a corpus of valid encodings, classic mutations (bit flips, interesting bytes such as msgpack
// 32-bit length headers, truncation, splicing, duplication) and random structured msgpack. Each decoder
// must either return a value or throw a DeltameshError subclass — never a TypeError, RangeError or a
// plain Error — within a bounded time and without holding on to memory.

/** Bytes that steer a msgpack or varint decoder into its edge cases (huge lengths, 64-bit ints, ext types). */
const INTERESTING = [0x00, 0x7f, 0x80, 0xff, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xcb, 0xcf, 0xd3, 0xd4, 0xd8, 0xd9, 0xda, 0xdb, 0xdc, 0xdd, 0xde, 0xdf, 0x90, 0x9f, 0xa0, 0xbf]
/** Multi-byte patterns: array32/bin32/str32/map32 claiming ~4 G elements, a max uvarint, a 64-bit int. */
const PATTERNS = [
  [0xdd, 0xff, 0xff, 0xff, 0xff], [0xc6, 0xff, 0xff, 0xff, 0xf0], [0xdb, 0x7f, 0xff, 0xff, 0xff], [0xdf, 0xff, 0xff, 0xff, 0xff],
  [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f], [0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], [0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0],
  [0xc7, 0xff, 0x01], [0xd8, 0xff], [0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0],
]

function mutate (input: Uint8Array, corpus: Uint8Array[], r: () => number): Uint8Array {
  const int = (n: number): number => Math.floor(r() * n)
  let out = Buffer.from(input)
  const rounds = 1 + int(4)
  for (let i = 0; i < rounds; i++) {
    const at = out.length === 0 ? 0 : int(out.length)
    switch (int(9)) {
      case 0: if (out.length > 0) out[at] = (out[at] as number) ^ (1 << int(8)); break
      case 1: if (out.length > 0) out[at] = int(256); break
      case 2: if (out.length > 0) out[at] = INTERESTING[int(INTERESTING.length)] as number; break
      case 3: out = Buffer.concat([out.subarray(0, at), Buffer.from(PATTERNS[int(PATTERNS.length)] as number[]), out.subarray(at)]); break
      case 4: out = out.subarray(0, at); break
      case 5: out = Buffer.concat([out.subarray(0, at), out.subarray(Math.min(out.length, at + 1 + int(16)))]); break
      case 6: { // splice in a piece of another valid input
        const other = corpus[int(corpus.length)] as Uint8Array
        const from = int(other.length)
        out = Buffer.concat([out.subarray(0, at), other.subarray(from, from + 1 + int(64)), out.subarray(at)])
        break
      }
      case 7: out = Buffer.concat([out, out.subarray(at, at + 1 + int(32))]); break
      default: out = Buffer.concat([out.subarray(0, at), Buffer.from([int(256), int(256)]), out.subarray(at)])
    }
    if (out.length > 1 << 16) out = out.subarray(0, 1 << 16)
  }
  return out
}

/** A random msgpack value shaped like our wire arrays (short tags, small ints, ids, nested lists). */
function randomValue (r: () => number, depth = 0): unknown {
  const int = (n: number): number => Math.floor(r() * n)
  switch (int(depth > 2 ? 6 : 8)) {
    case 0: return ['WANT', 'BLOCK', 'DONT_HAVE', 'HEADS', 'ERROR', 'deltamesh/envelope', 'deltamesh/root', 'deltamesh/have', 'deltamesh/manifest', 'BUSY', 'a/b', '..', ''][int(13)]
    case 1: return int(5) === 0 ? -int(2 ** 31) : int(2 ** (1 + int(53)))
    case 2: return Buffer.from(Array.from({ length: [0, 1, 31, 32, 33, 64][int(6)] as number }, () => int(256)))
    case 3: return r() < 0.5
    case 4: return null
    case 5: return r() * 1e6
    default: return Array.from({ length: int(6) }, () => randomValue(r, depth + 1))
  }
}

/** Calls `decode` and records how it failed; anything but a DeltameshError is a bug in the decoder. */
function attempt (decode: () => unknown, stats: FuzzStats): void {
  const t0 = performance.now()
  try {
    decode()
    stats.accepted++
  } catch (err) {
    if (!(err instanceof DeltameshError)) stats.untyped.push(`${(err as Error)?.name}: ${(err as Error)?.message}`)
    stats.rejected.set((err as Error).name, (stats.rejected.get((err as Error).name) ?? 0) + 1)
  }
  stats.slowestMs = Math.max(stats.slowestMs, performance.now() - t0)
  stats.inputs++
}

interface FuzzStats { inputs: number, accepted: number, rejected: Map<string, number>, untyped: string[], slowestMs: number }
const newStats = (): FuzzStats => ({ inputs: 0, accepted: 0, rejected: new Map(), untyped: [], slowestMs: 0 })

// ---- corpus of valid encodings ----
const id = (n: number): Uint8Array => chunkIdOf(Buffer.from(`fuzz ${n}`))
const { privateKey } = generateKeyPairSync('ed25519')
const envelope = signEnvelope({ tree: 'fedora/rawhide', seq: 7, label: 'Fedora-Rawhide-20261123.n.0', createdAtMs: 1_767_000_000_000, rootHash: id(0), rootSize: 120, publisherKey: rawPublicKeyOf(privateKey) }, privateKey)
const messages: Message[] = [
  { type: 'WANT', ids: [id(1)] },
  { type: 'WANT', ids: [id(1), id(2), id(3), id(4)] },
  { type: 'BLOCK', id: id(2), bytes: Buffer.from('some chunk bytes') },
  { type: 'DONT_HAVE', id: id(3) },
  { type: 'HEADS', heads: [{ tree: 'fedora/rawhide', seq: 7, complete: true, envelope: envelope.bytes }], wantReply: true },
  { type: 'ERROR', code: 'TOO_MANY_WANTS', message: 'limit 4096' },
]
const messageCorpus = messages.map(encodeMessage)
/** One frame just over a limit (34 KB, so used for 1 input in 20), so mutations land on both sides of it. */
const oversizeWant = encodeCanonical(['WANT', Array.from({ length: MAX_WANTS_PER_FRAME + 1 }, (_, i) => id(i))])
const entries: ManifestEntry[] = [
  { type: 'dir', path: 'Packages', mode: 0o755, mtimeMs: 1_700_000_000_000 },
  { type: 'file', path: 'Packages/bash-5.2.rpm', mode: 0o644, mtimeMs: 1_700_000_000_123, size: 30, chunks: [{ id: id(10), size: 10 }, { id: id(11), size: 20 }] },
  { type: 'symlink', path: 'Packages/latest', mtimeMs: 1_700_000_000_000, target: 'bash-5.2.rpm' },
  { type: 'dir', path: 'repodata', mode: 0o755, mtimeMs: 1_700_000_000_000 },
  { type: 'file', path: 'repodata/repomd.xml', mode: 0o644, mtimeMs: 5, size: 0, chunks: [] },
]
const writer = new ManifestWriter({ chunking: { algorithm: 'gear', avgBits: 15, minSize: 16384, maxSize: 262144 } })
const manifest = Buffer.concat([writer.start(), ...entries.map(e => writer.write(e))])
const root = encodeRoot({ manifestSize: manifest.byteLength, entryCount: entries.length, totalFileBytes: 30, chunks: [{ id: chunkIdOf(manifest), size: manifest.byteLength }] })
const have = encodeMessage({ type: 'HAVE', have: { tree: 'fedora/rawhide', seq: 7, ids: [id(1), id(2)] } })
const docCorpus = [envelope.bytes, root, have, manifest]
const corpus = [...messageCorpus, ...docCorpus]


describe('unknown versions', () => {
  it('a format version we do not speak is refused by every decoder, even when otherwise well-formed', () => {
    const reject = (decode: () => unknown, version = 2): void => {
      let error: unknown
      try { decode() } catch (err) { error = err }
      expect(error).toHaveProperty('name', 'InvalidMessageError')
      expect((error as Error).message).toMatch(new RegExp(`unsupported version ${version}`))
    }
    const frameOf = (value: unknown[]): Uint8Array => { const body = encodeCanonical(value); return Buffer.concat([encodeUvarint(body.length), body]) }
    // manifests are at format 2 (names as bytes, hardlinks, holes); 1 still decodes
    reject(() => decodeManifest(frameOf(['deltamesh/manifest', 3, ['gear', 15, 16384, 262144]])), 3)
    reject(() => decodeRoot(encodeCanonical(['deltamesh/root', 2, 10, 0, 0, new Uint8Array(32), [10]])))
    // an envelope of a future format, properly signed: refused before its signature matters
    const payload = encodeCanonical(['deltamesh/envelope', 2, 'a/b', 1, '', 0, new Uint8Array(32), 10, rawPublicKeyOf(privateKey)])
    reject(() => openEnvelope(encodeCanonical([payload, sign(null, payload, privateKey)])))
  })
})

describe('fuzz: decoders of peer and manifest input', () => {
  it('≥ 100,000 random and mutated frames, envelopes, roots, HAVEs and manifests: typed rejections only, bounded time and memory', async () => {
    const r = prng('fuzz/5eed')
    const int = (n: number): number => Math.floor(r() * n)
    const input = (pool: Uint8Array[]): Uint8Array => {
      const k = r()
      if (k < 0.15) return Buffer.from(Array.from({ length: int(200) }, () => int(256)))
      if (k < 0.35) return encodeCanonical([randomValue(r)].flat())
      return mutate(pool[int(pool.length)] as Uint8Array, corpus, r)
    }
    const s = { messages: newStats(), frames: newStats(), envelopes: newStats(), roots: newStats(), haves: newStats(), manifests: newStats() }
    global.gc?.()
    const heapBefore = process.memoryUsage().heapUsed
    let peakRss = process.memoryUsage().rss
    const t0 = performance.now()

    for (let i = 0; i < 45_000; i++) attempt(() => decodeMessage(input(i % 20 === 0 ? [oversizeWant] : messageCorpus)), s.messages)
    for (let i = 0; i < 10_000; i++) attempt(() => openEnvelope(input([envelope.bytes, messageCorpus[4] as Uint8Array])), s.envelopes)
    for (let i = 0; i < 8_000; i++) attempt(() => decodeRoot(input([root])), s.roots)
    for (let i = 0; i < 8_000; i++) attempt(() => decodeMessage(input([have])), s.haves)
    for (let i = 0; i < 25_000; i++) {
      const bytes = input([manifest])
      if (i % 2 === 0) { attempt(() => decodeManifest(bytes), s.manifests); continue }
      // incrementally, split at random points, as manifest chunks arrive
      attempt(() => {
        const reader = new ManifestReader()
        let at = 0
        while (at < bytes.length) { const n = 1 + int(40); reader.push(bytes.subarray(at, at + n)); at += n }
        reader.end()
      }, s.manifests)
      if (i % 1000 === 0) peakRss = Math.max(peakRss, process.memoryUsage().rss)
    }
    // whole streams of length-prefixed frames, delivered in random pieces, read by the real FrameStream
    for (let i = 0; i < 12_000; i++) {
      const frames = Array.from({ length: 1 + int(3) }, () => { const p = input(messageCorpus); return Buffer.concat([encodeUvarint(p.byteLength), p]) })
      let wire: Uint8Array = Buffer.concat(frames)
      if (r() < 0.5) wire = mutate(wire, corpus, r)
      const stream = new FakeStream()
      const fs = new FrameStream(stream as unknown as Stream, { maxFrameBytes: MAX_REQUEST_FRAME_BYTES, maxBufferBytes: 4 * MAX_REQUEST_FRAME_BYTES })
      const t = performance.now()
      for (let at = 0; at < wire.length;) { const n = 1 + int(64); stream.deliver(wire.subarray(at, at + n)); at += n }
      stream.dispatchEvent(new Event('remoteCloseWrite'))
      try {
        for (let f = 0; f < 16; f++) {
          const msg = await fs.read()
          if (msg === undefined) break
          s.frames.accepted++
        }
      } catch (err) {
        if (!(err instanceof DeltameshError)) s.frames.untyped.push(`${(err as Error).name}: ${(err as Error).message}`)
        s.frames.rejected.set((err as Error).name, (s.frames.rejected.get((err as Error).name) ?? 0) + 1)
      }
      s.frames.slowestMs = Math.max(s.frames.slowestMs, performance.now() - t)
      s.frames.inputs++
      if (i % 1000 === 0) peakRss = Math.max(peakRss, process.memoryUsage().rss)
    }

    const seconds = (performance.now() - t0) / 1000
    global.gc?.()
    const heapGrowth = process.memoryUsage().heapUsed - heapBefore
    const all = Object.values(s)
    const total = all.reduce((n, x) => n + x.inputs, 0)
    const summary = Object.entries(s).map(([k, x]) => `${k}: ${x.inputs} (${x.accepted} accepted; ${[...x.rejected].map(([n, c]) => `${n} ${c}`).join(', ')}; slowest ${x.slowestMs.toFixed(1)} ms)`)
    console.log(`fuzz: ${total} inputs in ${seconds.toFixed(2)} s = ${Math.round(total / seconds)} inputs/s; heap growth ${(heapGrowth / 1e6).toFixed(1)} MB; peak RSS ${(peakRss / 1e6).toFixed(0)} MB\n  ${summary.join('\n  ')}`)

    expect(total).toBeGreaterThanOrEqual(100_000)
    for (const [name, x] of Object.entries(s)) {
      expect(x.untyped.slice(0, 5), `${name}: untyped errors`).toEqual([])
      // every decoder saw rejections (the fuzzer reaches them) and acceptances are rare among hostile inputs
      expect(x.rejected.size, `${name}: kinds of rejection`).toBeGreaterThan(0)
      // a hang, not a slow machine: generous, since a shared CI box can stall a process for a second
      expect(x.slowestMs, `${name}: slowest input`).toBeLessThan(5000)
    }
    // the manifest decoder must have reached its structural checks, not only msgpack errors
    expect(s.manifests.rejected.get('InvalidPathError') ?? 0).toBeGreaterThan(0)
    expect(s.messages.rejected.get('LimitExceededError') ?? 0).toBeGreaterThan(0)
    expect(s.envelopes.rejected.get('BadSignatureError') ?? 0).toBeGreaterThan(0)
    expect(heapGrowth).toBeLessThan(64 * 1024 * 1024)
    expect(seconds).toBeLessThan(120)
  })
})
