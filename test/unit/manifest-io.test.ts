import { describe, expect, it, vi } from 'vitest'
import { chunkIdOf, toHex } from '../../protocol/chunk-id.js'
import { ManifestOrderChecker, ManifestWriter, type ManifestEntry, type ManifestRoot } from '../../protocol/manifest.js'
import { DEFAULT_CHUNKING } from '../../protocol/chunking.js'
import { readManifestEntries, storeManifest } from '../../agent/store/manifest-io.js'
import type { BlobStore } from '../../agent/store/types.js'

// A manifest's structure (order, parents, hardlinks) is checked on its first whole read in a process; later
// reads of the same verified bytes only decode. A manifest that fails is never remembered as checked.

class MemoryBlobs implements BlobStore {
  readonly blobs = new Map<string, Uint8Array>()
  async putBlob (id: Uint8Array, bytes: Uint8Array): Promise<void> { this.blobs.set(toHex(id), bytes) }
  async getBlob (id: Uint8Array): Promise<Uint8Array | undefined> { return this.blobs.get(toHex(id)) }
  async hasBlob (id: Uint8Array): Promise<boolean> { return this.blobs.has(toHex(id)) }
  async deleteBlob (id: Uint8Array): Promise<void> { this.blobs.delete(toHex(id)) }
}

const T = 1_700_000_000_000

function entries (n: number): ManifestEntry[] {
  const out: ManifestEntry[] = [{ type: 'dir', path: 'd', mode: 0o755, mtimeMs: T }]
  for (let i = 0; i < n; i++) {
    const bytes = Buffer.from(`file ${i}`)
    out.push({ type: 'file', path: `d/f${String(i).padStart(4, '0')}`, mode: 0o644, mtimeMs: T, size: bytes.byteLength, chunks: [{ id: chunkIdOf(bytes), size: bytes.byteLength }] })
  }
  return out
}

async function readAll (catalog: BlobStore, root: ManifestRoot): Promise<number> {
  let n = 0
  for await (const _ of readManifestEntries(catalog, root)) n++
  return n
}

describe('manifest structure checked once per process', () => {
  it('checks order and links on the first read only; later reads decode the same entries', async () => {
    const catalog = new MemoryBlobs()
    const w = new ManifestWriter({ chunking: DEFAULT_CHUNKING })
    const list = entries(50)
    const { root } = await storeManifest(catalog, [Buffer.concat([w.start(), ...list.map(e => w.write(e))])])
    const check = vi.spyOn(ManifestOrderChecker.prototype, 'check')
    try {
      expect(await readAll(catalog, root)).toBe(51)
      expect(check).not.toHaveBeenCalled() // storeManifest checked it whole
      const seen: string[] = []
      for await (const e of readManifestEntries(catalog, root)) seen.push(e.path)
      expect(seen).toEqual(list.map(e => e.path))
    } finally { check.mockRestore() }
  })

  it('never remembers a manifest that failed: an unsorted one is refused on every read', async () => {
    const catalog = new MemoryBlobs()
    // a well-formed header and two directories out of order, stored as blobs by hand (storeManifest would refuse it)
    const w = new ManifestWriter({ chunking: DEFAULT_CHUNKING })
    const header = w.start()
    const good = new ManifestWriter({ chunking: DEFAULT_CHUNKING })
    good.start()
    const b = good.write({ type: 'dir', path: 'b', mode: 0o755, mtimeMs: T })
    const a = new ManifestWriter({ chunking: DEFAULT_CHUNKING })
    a.start()
    const aDir = a.write({ type: 'dir', path: 'a', mode: 0o755, mtimeMs: T })
    const bytes = Buffer.concat([header, b, aDir])
    const id = chunkIdOf(bytes)
    await catalog.putBlob(id, bytes)
    const root: ManifestRoot = { manifestSize: bytes.byteLength, entryCount: 2, totalFileBytes: 0, chunks: [{ id, size: bytes.byteLength }] }
    await expect(readAll(catalog, root)).rejects.toThrow(/not after/)
    await expect(readAll(catalog, root)).rejects.toThrow(/not after/)
  })
})
