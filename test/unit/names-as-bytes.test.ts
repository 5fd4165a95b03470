import { describe, expect, it } from 'vitest'
import { chunkIdOf } from '../../protocol/chunk-id.js'
import { encodeCanonical, encodeUvarint } from '../../protocol/codec.js'
import { decodeManifest, HOLE_CHUNK_ID, isHoleChunk, ManifestWriter, type ChunkingParams, type ManifestEntry } from '../../protocol/manifest.js'
import { bytesToPath, comparePaths, displayPath, fsPath, pathToBytes, sortKey, validateRelativePath } from '../../protocol/paths.js'

const chunking: ChunkingParams = { algorithm: 'gear', avgBits: 15, minSize: 16384, maxSize: 262144 }
const T = 1_700_000_000_000

/** Names a Linux tree can hold that format 1 refused. */
const RAW_NAMES: Buffer[] = [
  Buffer.from('back\\slash'),
  Buffer.from('new\nline'),
  Buffer.from('tab\there'),
  Buffer.from('system-systemd\\x2dcryptsetup.slice'),
  Buffer.from([0x6c, 0x61, 0x74, 0xe9, 0x6e]), // 'latén' in Latin-1: not UTF-8
  Buffer.from([0xed, 0xa0, 0x80]), // an encoded surrogate: not UTF-8 either
  Buffer.from([0xc3, 0xa9, 0xff, 0xc3]), // valid, invalid, truncated
  Buffer.alloc(255, 0x78),
  Buffer.from('caf\u00e9 \ud83d\ude00'),
]

describe('names are bytes', () => {
  it('every byte string but "/" and NUL maps to a path and back, byte for byte', () => {
    for (const raw of RAW_NAMES) {
      const path = bytesToPath(raw)
      expect(validateRelativePath(path)).toBe(path)
      expect(pathToBytes(path).equals(raw)).toBe(true)
    }
    for (let b = 1; b < 256; b++) {
      if (b === 0x2f) continue
      const raw = Buffer.from([0x61, b, 0x80, b])
      expect(pathToBytes(bytesToPath(raw)).equals(raw)).toBe(true)
    }
  })

  it('plain names stay plain strings and go to node:fs unconverted; escaped ones as bytes', () => {
    expect(fsPath('/srv/a/b')).toBe('/srv/a/b')
    const latin = bytesToPath(Buffer.from([0xe9]))
    expect(Buffer.isBuffer(fsPath(`/srv/${latin}`))).toBe(true)
    expect((fsPath(`/srv/${latin}`) as Buffer).equals(Buffer.from([0x2f, 0x73, 0x72, 0x76, 0x2f, 0xe9]))).toBe(true)
  })

  it('refuses only what is unsafe: empty, ".", "..", NUL, absolute, too long, non-canonical escapes', () => {
    for (const bad of ['', 'a//b', 'a/./b', '../x', '/etc', 'a\0b', 'x'.repeat(256), `a/${'y'.repeat(256)}`]) {
      expect(() => validateRelativePath(bad)).toThrow(expect.objectContaining({ name: 'InvalidPathError' }))
    }
    // two escaped bytes that together are valid UTF-8 ('é'): another spelling of 'é', so refused
    expect(() => validateRelativePath('\udcc3\udca9')).toThrow(/canonical/)
    // a lone high surrogate is no byte at all
    expect(() => validateRelativePath('a\ud800')).toThrow(/surrogate/)
  })

  it('sorts by bytes with "/" lowest, escaped bytes included', () => {
    const names = RAW_NAMES.map(bytesToPath)
    const byBytes = [...names].sort((a, b) => Buffer.compare(sortKey(a), sortKey(b)))
    expect([...names].sort(comparePaths)).toEqual(byBytes)
    expect(comparePaths(bytesToPath(Buffer.from([0x61, 0xe9])), bytesToPath(Buffer.from([0x61, 0xc3, 0xa9])))).toBeGreaterThan(0)
  })

  it('displays unambiguously', () => {
    expect(displayPath('plain/name.rpm')).toBe('plain/name.rpm')
    expect(displayPath('back\\slash')).toBe('back\\\\slash')
    expect(displayPath('new\nline\t\x7f')).toBe('new\\nline\\t\\x7f')
    expect(displayPath(bytesToPath(Buffer.from([0x6c, 0xe9])))).toBe('l\\xe9')
    expect(displayPath('\ud83d\ude00')).toBe('\ud83d\ude00')
    // the escape of a real backslash-x never looks like an escaped byte
    expect(displayPath('\\xe9')).not.toBe(displayPath(bytesToPath(Buffer.from([0xe9]))))
  })
})

describe('manifest format 2', () => {
  const id = (s: string): Uint8Array => chunkIdOf(Buffer.from(s))
  const names = RAW_NAMES.map(bytesToPath).sort(comparePaths)

  function entries (): ManifestEntry[] {
    const out: ManifestEntry[] = [{ type: 'dir', path: 'd', mode: 0o755, mtimeMs: T, mtimeNs: 123_456 }]
    for (const name of names) out.push({ type: 'file', path: `d/${name}`, mode: 0o4755, mtimeMs: -5, mtimeNs: 999_999, size: 3, chunks: [{ id: id(name), size: 3 }] })
    out.push({ type: 'file', path: 'e', mode: 0o644, mtimeMs: T, size: 4, chunks: [{ id: id('x'), size: 2 }, { id: HOLE_CHUNK_ID, size: 2 }], linkable: true })
    out.push({ type: 'file', path: 'f', mode: 0o644, mtimeMs: T, size: 4, chunks: [{ id: id('x'), size: 2 }, { id: HOLE_CHUNK_ID, size: 2 }], linkTo: 'e' })
    out.push({ type: 'symlink', path: 'g', mtimeMs: T, mtimeNs: 1, target: `../${bytesToPath(Buffer.from([0xff]))}/x` })
    return out
  }

  function encode (list: ManifestEntry[]): Buffer {
    const w = new ManifestWriter({ chunking, root: { mode: 0o755, mtimeMs: T, mtimeNs: 7 } })
    return Buffer.concat([w.start(), ...list.map(e => w.write(e))])
  }

  it('round-trips names as bytes, nanoseconds, hardlinks and holes, canonically', () => {
    const bytes = encode(entries())
    const decoded = decodeManifest(bytes)
    const plain = (list: ManifestEntry[]): unknown => list.map(e => e.type === 'file' ? { ...e, chunks: e.chunks.map(c => [Buffer.from(c.id).toString('hex'), c.size]) } : e)
    expect(plain(decoded.entries)).toEqual(plain(entries()))
    expect(decoded.header.root).toEqual({ mode: 0o755, mtimeMs: T, mtimeNs: 7 })
    expect(encode(decoded.entries).equals(bytes)).toBe(true)
    const hole = decoded.entries.find(e => e.path === 'e')
    expect(hole?.type === 'file' && isHoleChunk(hole.chunks[1]!.id)).toBe(true)
    expect(isHoleChunk(id('x'))).toBe(false)
  })

  it('refuses a hardlink to a file that is not linkable, not earlier, or differs', () => {
    const base = entries().slice(0, -2)
    const file = (path: string, size: number, extra: object): ManifestEntry => ({ type: 'file', path, mode: 0o644, mtimeMs: T, size, chunks: size === 0 ? [] : [{ id: id('x'), size }], ...extra })
    expect(() => encode([...base.slice(0, -1), file('e', 2, {}), file('f', 2, { linkTo: 'e' })])).toThrow(/not an earlier linkable/)
    expect(() => encode([...base.slice(0, -1), file('e', 2, { linkable: true }), file('f', 0, { linkTo: 'e' })])).toThrow(/other content/)
    expect(() => encode([...base.slice(0, -1), file('e', 2, { linkTo: 'f' }), file('f', 2, { linkable: true })])).toThrow(/not an earlier linkable/)
  })

  it('compares a hardlink with its target chunk by chunk, for short chunk lists (spelled out) and long ones (hashed)', () => {
    const base = entries().slice(0, -3)
    for (const count of [1, 4, 5, 40]) {
      const chunks = Array.from({ length: count }, (_, i) => ({ id: id(`c${i}`), size: 10 + i }))
      const size = chunks.reduce((n, c) => n + c.size, 0)
      const target: ManifestEntry = { type: 'file', path: 'e', mode: 0o644, mtimeMs: T, size, chunks, linkable: true }
      const same: ManifestEntry = { type: 'file', path: 'f', mode: 0o644, mtimeMs: T, size, chunks, linkTo: 'e' }
      expect(() => encode([...base, target, same]), `${count} chunks`).not.toThrow()
      // one chunk's id swapped, or two chunks' sizes traded: another file
      const otherId = chunks.map((c, i) => i === count - 1 ? { ...c, id: id('other') } : c)
      expect(() => encode([...base, target, { ...same, chunks: otherId }]), `${count} chunks`).toThrow(/other content/)
      if (count > 1) {
        const traded = chunks.map((c, i) => i === 0 ? { ...c, size: c.size + 1 } : i === 1 ? { ...c, size: c.size - 1 } : c)
        expect(() => encode([...base, target, { ...same, chunks: traded }]), `${count} chunks`).toThrow(/other content/)
      }
      expect(() => encode([...base, target, { ...same, mtimeNs: 5 }]), `${count} chunks`).toThrow(/other content/)
    }
  })

  it('still decodes format 1, and refuses format 1 records in a format 2 manifest', () => {
    const frame = (value: unknown[]): Uint8Array => { const body = encodeCanonical(value); return Buffer.concat([encodeUvarint(body.length), body]) }
    const v1 = Buffer.concat([
      frame(['deltamesh/manifest', 1, ['gear', 15, 16384, 262144]]),
      frame([0, 'a', 0o755, T]),
      frame([1, 'a/b', 0o644, T, 2, id('b'), [2]]),
      frame([2, 'a/c', T, 'b']),
    ])
    expect(decodeManifest(v1).entries).toEqual([
      { type: 'dir', path: 'a', mode: 0o755, mtimeMs: T },
      { type: 'file', path: 'a/b', mode: 0o644, mtimeMs: T, size: 2, chunks: [{ id: id('b'), size: 2 }] },
      { type: 'symlink', path: 'a/c', mtimeMs: T, target: 'b' },
    ])
    const mixed = Buffer.concat([frame(['deltamesh/manifest', 2, ['gear', 15, 16384, 262144], []]), frame([0, 'a', 0o755, T])])
    expect(() => decodeManifest(mixed)).toThrow(/not a byte string|fields/)
  })
})

describe('the scanner leaves nothing out silently', () => {
  it('carries every name, makes later names of an inode hardlinks, and reports FIFOs', async () => {
    const { mkdtemp, writeFile, link, rm, mkdir } = await import('node:fs/promises')
    const { tmpdir } = await import('node:os')
    const { join } = await import('node:path')
    const { spawnSync } = await import('node:child_process')
    const { scanTree } = await import('../../agent/scan/scanner.js')
    const { chunkFile } = await import('../../agent/chunk/chunker.js')
    const { DEFAULT_CHUNKING } = await import('../../protocol/chunking.js')
    const dir = await mkdtemp(join(tmpdir(), 'dm-scan-names-'))
    try {
      await writeFile(Buffer.from(`${dir}/lat\xe9n`, 'latin1'), 'x')
      await writeFile(join(dir, 'new\nline'), 'y')
      await mkdir(join(dir, 'd'))
      await writeFile(join(dir, 'd', 'a'), 'shared')
      await link(join(dir, 'd', 'a'), join(dir, 'd', 'b'))
      expect(spawnSync('mkfifo', [join(dir, 'fifo')]).status).toBe(0)
      const skipped: Array<[string, string]> = []
      const entries: ManifestEntry[] = []
      for await (const item of scanTree(dir, { chunkFile: async p => await chunkFile(p, DEFAULT_CHUNKING), onSkip: (p, kind) => skipped.push([p, kind]) })) entries.push(item.entry)
      expect(entries.map(e => pathToBytes(e.path).toString('latin1'))).toEqual(['d', 'd/a', 'd/b', 'lat\xe9n', 'new\nline'])
      const [a, b] = [entries[1], entries[2]]
      expect(a?.type === 'file' && a.linkable).toBe(true)
      expect(b?.type === 'file' && b.linkTo).toBe('d/a')
      expect(skipped).toEqual([['fifo', 'fifo']])
      // and the manifest writer accepts what the scanner made (the hardlink repeats its target exactly)
      const w = new ManifestWriter({ chunking })
      for (const e of entries) w.write(e)
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})
