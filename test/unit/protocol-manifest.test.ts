import { describe, expect, it } from 'vitest'
import { chunkIdOf } from '../../protocol/chunk-id.js'
import { decodeManifest, decodeRoot, encodeEntry, encodeHeader, encodeRoot, ManifestReader, ManifestWriter, type ChunkingParams, type ManifestEntry } from '../../protocol/manifest.js'
import { comparePaths, sortKey, validateRelativePath, validateTreeName } from '../../protocol/paths.js'
import { encodeCanonical, encodeUvarint } from '../../protocol/codec.js'

const chunking: ChunkingParams = { algorithm: 'rabin', avgBits: 16, minSize: 16384, maxSize: 262144 }
const id = (s: string): Uint8Array => chunkIdOf(Buffer.from(s))

function sampleEntries (): ManifestEntry[] {
  return [
    { type: 'dir', path: 'a', mode: 0o755, mtimeMs: 1_700_000_000_000 },
    { type: 'file', path: 'a/b.rpm', mode: 0o644, mtimeMs: 1_700_000_000_123, size: 30, chunks: [{ id: id('x'), size: 10 }, { id: id('y'), size: 20 }] },
    { type: 'symlink', path: 'a/latest', mtimeMs: 1_700_000_000_000, target: 'b.rpm' },
    { type: 'file', path: 'a-z', mode: 0o600, mtimeMs: 5, size: 0, chunks: [] },
  ]
}

function encodeAll (entries: ManifestEntry[]): Uint8Array {
  const writer = new ManifestWriter({ chunking })
  return Buffer.concat([writer.start(), ...entries.map(e => writer.write(e))])
}

describe('manifest encoding', () => {
  it('round-trips and is byte-identical across runs', () => {
    const a = encodeAll(sampleEntries())
    const b = encodeAll(sampleEntries())
    expect(Buffer.compare(a, b)).toBe(0)
    const decoded = decodeManifest(a)
    expect(decoded.header.chunking).toEqual(chunking)
    expect(decoded.entries.map(e => e.path)).toEqual(['a', 'a/b.rpm', 'a/latest', 'a-z'])
    const file = decoded.entries[1]
    expect(file?.type === 'file' && Buffer.from(file.chunks[1]!.id).equals(Buffer.from(id('y')))).toBe(true)
    // re-encoding decoded entries gives the same bytes: the encoding is canonical
    expect(Buffer.compare(encodeAll(decoded.entries), a)).toBe(0)
  })

  it('decodes incrementally whatever the split points', () => {
    const bytes = encodeAll(sampleEntries())
    for (let step = 1; step < 40; step += 7) {
      const reader = new ManifestReader()
      const got: ManifestEntry[] = []
      for (let i = 0; i < bytes.length; i += step) got.push(...reader.push(bytes.subarray(i, i + step)))
      reader.end()
      expect(got.length).toBe(4)
    }
  })

  it('orders paths component-wise (a directory before its contents)', () => {
    expect(comparePaths('a/b', 'a-z')).toBeLessThan(0)
    expect(comparePaths('a', 'a/b')).toBeLessThan(0)
    expect(comparePaths('b', 'a/b')).toBeGreaterThan(0)
  })

  it('orders any two strings exactly as their UTF-8 bytes with / as NUL (the fast path agrees with the bytes)', () => {
    const byBytes = (a: string, b: string): number => Buffer.compare(sortKey(a), sortKey(b))
    // units around every boundary the fast path cares about: '/', NUL, ASCII, 2- and 3-byte BMP, escaped bytes, a pair, above them
    const alphabet = ['/', '\0', 'a', 'b', '.', '-', '\u00e9', '\u07ff', '\u0800', '\ud7ff', '\udc80', '\udcff', '\ud83d\ude00', '\ue000', '\uffff']
    let seed = 7
    const random = (n: number): number => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return seed % n }
    // built from whole units of the alphabet, so a cut never splits a surrogate pair into a non-byte
    const units = (): string[] => Array.from({ length: random(6) }, () => alphabet[random(alphabet.length)] as string)
    for (let i = 0; i < 20_000; i++) {
      const aUnits = units()
      const a = aUnits.join('')
      const b = random(3) === 0 ? a + units().join('') : random(2) === 0 ? aUnits.slice(0, random(aUnits.length + 1)).join('') + units().join('') : units().join('')
      expect(comparePaths(a, b), JSON.stringify([a, b])).toBe(byBytes(a, b))
      expect(comparePaths(b, a), JSON.stringify([b, a])).toBe(byBytes(b, a))
    }
  })

  it('rejects unsorted, duplicate and orphan entries', () => {
    const [dir, file, link] = sampleEntries() as [ManifestEntry, ManifestEntry, ManifestEntry]
    const bad = (entries: ManifestEntry[]): Uint8Array => Buffer.concat([encodeHeader({ chunking }), ...entries.map(encodeEntry)])
    expect(() => decodeManifest(bad([dir, link, file]))).toThrow(/not after/)
    expect(() => decodeManifest(bad([dir, file, file]))).toThrow(/not after/)
    expect(() => decodeManifest(bad([file]))).toThrow(/parent/)
    // a file under a symlink: the link's name is not an open directory
    const underLink: ManifestEntry = { type: 'file', path: 'a/latest/x', mode: 0o644, mtimeMs: 0, size: 0, chunks: [] }
    expect(() => decodeManifest(bad([dir, link, underLink]))).toThrow(/parent/)
  })

  it('rejects hostile paths and inconsistent sizes with typed errors', () => {
    const raw = (value: unknown[]): Uint8Array => {
      const body = encodeCanonical(value)
      return Buffer.concat([encodeHeader({ chunking }), encodeUvarint(body.byteLength), body])
    }
    const name = (s: string): Buffer => Buffer.from(s)
    for (const path of ['../etc/passwd', '/etc/passwd', 'a/../../x', 'a//b', 'a/./b', 'a\0b', '', 'x/']) {
      expect(() => decodeManifest(raw([0, name(path), 0o755, 0, 0])), path).toThrow(expect.objectContaining({ name: 'InvalidPathError' }))
    }
    const none = new Uint8Array(0)
    const ids = Buffer.concat([id('x')])
    expect(() => decodeManifest(raw([1, name('f'), 0o644, 0, 0, 11, ids, [10], 0, none]))).toThrow(/add up/)
    expect(() => decodeManifest(raw([1, name('f'), 0o644, 0, 0, 10, ids.subarray(0, 31), [10], 0, none]))).toThrow(expect.objectContaining({ name: 'InvalidMessageError' }))
    expect(() => decodeManifest(raw([1, name('f'), 0o644, 0, 0, 10 ** 7, ids, [10 ** 7], 0, none]))).toThrow(/outside/)
    expect(() => decodeManifest(raw([1, name('f'), 0o644, 0, 10 ** 6, 0, none, [], 0, none]))).toThrow(/nanoseconds/)
    expect(() => decodeManifest(raw([9, name('f')]))).toThrow(/unknown entry type/)
    expect(() => decodeManifest(raw([0, name('d'), 0o10000, 0, 0]))).toThrow(/mode/)
    // format 2 names are byte strings: a text name is a format 1 record in the wrong manifest
    expect(() => decodeManifest(raw([0, 'd', 0o755, 0, 0]))).toThrow(/not a byte string/)
    // a length prefix claiming more than the limit is refused before anything is buffered
    expect(() => new ManifestReader().push(Buffer.concat([encodeUvarint(2 ** 40)]))).toThrow(expect.objectContaining({ name: 'LimitExceededError' }))
  })

  it('root blob round-trips and checks its totals', () => {
    const root = { manifestSize: 30, entryCount: 4, totalFileBytes: 30, chunks: [{ id: id('m1'), size: 10 }, { id: id('m2'), size: 20 }] }
    const decoded = decodeRoot(encodeRoot(root))
    expect(decoded.entryCount).toBe(4)
    expect(decoded.chunks.map(c => c.size)).toEqual([10, 20])
    expect(() => decodeRoot(encodeRoot({ ...root, manifestSize: 31 }))).toThrow(/add up/)
    expect(() => decodeRoot(Buffer.from([0xc1]))).toThrow(expect.objectContaining({ name: 'InvalidMessageError' }))
  })
})

describe('names', () => {
  it('accepts clean relative paths and tree names', () => {
    expect(validateRelativePath('Packages/x86_64/foo-1.0.rpm')).toBe('Packages/x86_64/foo-1.0.rpm')
    expect(validateTreeName('rhel-10/compose/BaseOS')).toBe('rhel-10/compose/BaseOS')
    for (const p of ['a', '.a', 'a.', '...', '..a/b', 'a/.b', 'a/b..', 'é'.repeat(127), `${'x'.repeat(255)}/y`, '\ud83d\ude00', `${'a/'.repeat(2047)}a`]) {
      expect(validateRelativePath(p), p).toBe(p)
    }
  })
  it('rejects paths that are not clean, relative and bounded', () => {
    const bad = ['', '/a', 'a/', 'a//b', '.', '..', 'a/./b', 'a/..', '../a', './a', 'a\0b', '\udc80\udc80\udcff'.slice(1) + '\ud800', '\ud83d',
      'x'.repeat(256), 'é'.repeat(128), `a/${'é'.repeat(128)}/b`, `${'a/'.repeat(2048)}a`, `${'é/'.repeat(1366)}`]
    for (const p of bad) expect(() => validateRelativePath(p), JSON.stringify(p.slice(0, 20))).toThrow(expect.objectContaining({ name: 'InvalidPathError' }))
    expect(() => validateRelativePath(7)).toThrow(expect.objectContaining({ name: 'InvalidPathError' }))
  })
  it('rejects bad tree names', () => {
    for (const t of ['', '../x', 'a//b', 'a b', 'a/./b', '/a', 'x'.repeat(201)]) {
      expect(() => validateTreeName(t), t).toThrow(expect.objectContaining({ name: 'InvalidTreeNameError' }))
    }
  })
})
