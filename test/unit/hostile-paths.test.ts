import { chmod, lstat, mkdir, readFile, readdir, readlink, rename, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { chunkIdOf, toHex } from '../../protocol/chunk-id.js'
import { encodeEntry, encodeHeader, type ChunkingParams, type ManifestEntry, type ManifestRoot } from '../../protocol/manifest.js'
import { bytesToPath, comparePaths } from '../../protocol/paths.js'
import { Materializer } from '../../agent/versions/materializer.js'
import { readManifestEntries } from '../../agent/store/manifest-io.js'
import { storeWorlds, type StoreWorld } from '../helpers/world.js'

// Hostile manifests against the real materializer: whatever the entries say, nothing is ever written,
// chmod-ed or deleted outside the version being built. Each manifest goes through the production path
// (catalog blob → readManifestEntries → Materializer), with the file chunks supplied by fill() as a sync would.

const TREE = 'lab/paths'
const CHUNKING: ChunkingParams = { algorithm: 'gear', avgBits: 12, minSize: 64, maxSize: 4096 }
const T0 = 1_700_000_000_000

interface World extends StoreWorld { outside: string }
const worlds = storeWorlds('deltamesh-paths-')

async function world (): Promise<World> {
  const w = await worlds.create()
  const outside = join(w.tmp, 'outside')
  await mkdir(outside)
  await writeFile(join(outside, 'x'), 'precious')
  await chmod(join(outside, 'x'), 0o600)
  await utimes(join(outside, 'x'), 1000, 1000)
  return { ...w, outside }
}

const dir = (path: string): ManifestEntry => ({ type: 'dir', path, mode: 0o755, mtimeMs: T0 })
const link = (path: string, target: string): ManifestEntry => ({ type: 'symlink', path, mtimeMs: T0, target })
const contents = new Map<string, Buffer>()
function file (path: string, text: string): ManifestEntry {
  const bytes = Buffer.from(text)
  contents.set(toHex(chunkIdOf(bytes)), bytes)
  return { type: 'file', path, mode: 0o644, mtimeMs: T0, size: bytes.length, chunks: bytes.length === 0 ? [] : [{ id: chunkIdOf(bytes), size: bytes.length }] }
}

/** Stores the entries as they come (no writer-side checks: the manifest is hostile) and returns its root. */
async function hostileManifest (w: World, entries: ManifestEntry[]): Promise<ManifestRoot> {
  const bytes = Buffer.concat([encodeHeader({ chunking: CHUNKING }), ...entries.map(encodeEntry)])
  const id = chunkIdOf(bytes)
  await w.store.catalog.putBlob(id, bytes)
  const fileBytes = entries.reduce((n, e) => n + (e.type === 'file' ? e.size : 0), 0)
  return { manifestSize: bytes.length, entryCount: entries.length, totalFileBytes: fileBytes, chunks: [{ id, size: bytes.length }] }
}

/** prepare → fill every planned chunk → (hook) → finalize. Resolves to the error, or undefined on success. */
async function materialize (w: World, entries: ManifestEntry[], beforeFinalize?: (staging: string) => Promise<void>): Promise<unknown> {
  const root = await hostileManifest(w, entries)
  const m = new Materializer({ index: w.store.index, catalog: w.store.catalog, home: w.home }, { tree: TREE, seq: 1, entries: () => readManifestEntries(w.store.catalog, root), envelope: Buffer.from('unused') })
  try {
    for (const c of await m.prepare()) await m.fill(c.id, contents.get(toHex(c.id)) as Buffer)
    await beforeFinalize?.(m.stagingDir)
    await m.finalize()
    return undefined
  } catch (err) {
    await m.close()
    return err
  }
}

/** The outside directory exactly as world() left it: same names, the file's content, mode and mtime intact. */
async function expectOutsideUntouched (w: World): Promise<void> {
  expect(await readdir(w.outside)).toEqual(['x'])
  expect(await readFile(join(w.outside, 'x'), 'utf8')).toBe('precious')
  const st = await stat(join(w.outside, 'x'))
  expect(st.mode & 0o7777).toBe(0o600)
  expect(Math.floor(st.mtimeMs)).toBe(1_000_000)
  // nothing appeared next to the home either
  expect((await readdir(w.tmp)).sort()).toEqual(['home', 'outside'])
}

describe('hostile manifest paths', () => {
  it.each([
    ['absolute', '/etc/evil'],
    ['parent', '../evil'],
    ['parent in the middle', 'a/../../evil'],
    ['dot segment', 'a/./evil'],
    ['empty segment', 'a//evil'],
    ['NUL', 'evil\u0000.txt'],
    ['over-long name', `${'x'.repeat(256)}`],
  ])('%s path (%j) is a typed ManifestError and nothing lands outside', async (_name, path) => {
    const w = await world()
    const err = await materialize(w, [dir('a'), file(path, 'pwned')])
    expect(err).toHaveProperty('name', 'ManifestError')
    await expectOutsideUntouched(w)
  })

  it('backslashes, newlines and bytes that are not UTF-8 are names like any other: created inside, byte for byte', async () => {
    // POSIX allows every byte but '/' and NUL in a name; '..\\..\\evil' is one name on Linux, not a way out
    const w = await world()
    const latin1 = bytesToPath(Buffer.from([0x65, 0x76, 0x69, 0x6c, 0xe9]))
    const names = ['..\\..\\evil', 'evil\n', 'tab\there', latin1].sort(comparePaths)
    expect(await materialize(w, names.map(n => file(n, 'inside')))).toBeUndefined()
    const v = w.home.versionDir(TREE, 1)
    const listed = (await readdir(v, { encoding: 'buffer' })).map(b => bytesToPath(b)).sort(comparePaths)
    expect(listed).toEqual(names)
    expect(await readFile(Buffer.concat([Buffer.from(v + '/'), Buffer.from([0x65, 0x76, 0x69, 0x6c, 0xe9])]), 'utf8')).toBe('inside')
    await expectOutsideUntouched(w)
  })

  it('a symlink in the middle of a path: nothing is written through it', async () => {
    const w = await world()
    expect(await materialize(w, [dir('a'), link('a/l', w.outside), file('a/l/x', 'pwned!!!')])).toHaveProperty('name', 'ManifestError')
    expect(await materialize(w, [dir('a'), link('a/l', w.outside), dir('a/l/deep'), file('a/l/deep/x', 'pwned')])).toHaveProperty('name', 'ManifestError')
    await expectOutsideUntouched(w)
  })

  it('a file under a symlinked directory (absolute or relative target) is refused', async () => {
    const w = await world()
    expect(await materialize(w, [link('docs', w.outside), file('docs/x', 'pwned!!!')])).toHaveProperty('name', 'ManifestError')
    expect(await materialize(w, [link('docs', '../../../../outside'), file('docs/x', 'pwned!!!')])).toHaveProperty('name', 'ManifestError')
    await expectOutsideUntouched(w)
  })

  it('duplicate entries, and a file and a directory of the same name, are refused', async () => {
    const w = await world()
    expect(await materialize(w, [file('a.txt', 'one'), file('a.txt', 'two')])).toHaveProperty('name', 'ManifestError')
    expect(await materialize(w, [dir('a'), file('a', 'two')])).toHaveProperty('name', 'ManifestError')
    expect(await materialize(w, [link('a', w.outside), dir('a'), file('a/x', 'pwned!!!')])).toHaveProperty('name', 'ManifestError')
    await expectOutsideUntouched(w)
  })

  it('names differing only by case or by Unicode normalization stay distinct: neither overwrites nor writes through the other', async () => {
    const w = await world()
    const nfc = 'caf\u00e9'
    const nfd = 'cafe\u0301'
    expect(nfc.normalize('NFC')).toBe(nfd.normalize('NFC'))
    const entries = [
      file('A.txt', 'upper'), dir('Docs'), file('Docs/x', 'inside'), file('a.txt', 'lower'),
      // a lower-case twin of a directory that points outside: on a folding filesystem this would be the trap
      file(nfc, 'composed'), file(nfd, 'decomposed'), link('docs', w.outside),
    ].sort((x, y) => Buffer.compare(Buffer.from(x.path), Buffer.from(y.path)))
    expect(await materialize(w, entries)).toBeUndefined()
    const v = w.home.versionDir(TREE, 1)
    expect(await readFile(join(v, 'A.txt'), 'utf8')).toBe('upper')
    expect(await readFile(join(v, 'a.txt'), 'utf8')).toBe('lower')
    expect(await readFile(join(v, 'Docs', 'x'), 'utf8')).toBe('inside')
    expect(await readFile(join(v, nfc), 'utf8')).toBe('composed')
    expect(await readFile(join(v, nfd), 'utf8')).toBe('decomposed')
    expect(await readlink(join(v, 'docs'))).toBe(w.outside) // a link is data: created, never followed
    expect((await readdir(v)).length).toBe(6)
    await expectOutsideUntouched(w)
  })

  it('a directory of staging swapped for a symlink before finalize: refused, the file outside keeps its mode and mtime', async () => {
    const w = await world()
    // same size as the outside file, so a size check alone would not notice the swap
    const err = await materialize(w, [dir('d'), file('d/x', 'imposter')], async staging => {
      await rename(join(staging, 'd'), join(w.tmp, 'moved-away'))
      await symlink(w.outside, join(staging, 'd'))
    })
    expect(err).toHaveProperty('name', 'StagingError')
    await rm(join(w.tmp, 'moved-away'), { recursive: true })
    await expectOutsideUntouched(w)
  })

  it('a directory found where the manifest wants a symlink (a case collision on a folding filesystem) is refused, not deleted', async () => {
    const w = await world()
    const err = await materialize(w, [dir('a'), link('a/l', 'elsewhere')], async staging => {
      await mkdir(join(staging, 'a', 'l'))
      await writeFile(join(staging, 'a', 'l', 'keep'), 'someone else\'s file')
    })
    expect(err).toHaveProperty('name', 'StagingError')
    expect(await readFile(join(w.home.stagingDir(TREE, 1), 'a', 'l', 'keep'), 'utf8')).toBe('someone else\'s file')
    expect((await lstat(join(w.home.stagingDir(TREE, 1), 'a', 'l'))).isDirectory()).toBe(true)
  })
})
