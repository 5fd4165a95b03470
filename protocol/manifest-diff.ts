// The difference between two manifests, from their entries alone (no file is read): both streams are in
// canonical order (comparePaths), so one merge pass finds every added, removed, changed and mode-changed path
// with memory for two entries, whatever the size of the trees.
import { comparePaths } from './paths.js'
import type { FileEntry, ManifestEntry } from './manifest.js'

/**
 * - added / removed: the path is only in the newer / older version;
 * - changed: the same path with other content: another type, a file's size or chunks, a symlink's target
 *   (a mode that changed too is part of it);
 * - mode-changed: the same content, other permission bits.
 * A change of mtime alone is not listed: the bytes a reader gets are the same.
 */
export type ChangeKind = 'added' | 'removed' | 'changed' | 'mode-changed'

export interface PathChange {
  change: ChangeKind
  path: string
  /** The entry's type in the newer version (removed: in the older one). */
  type: ManifestEntry['type']
  /** mode-changed (and changed, when both have one): the permission bits before and after. */
  fromMode?: number
  toMode?: number
}

export const CHANGE_KINDS: readonly ChangeKind[] = ['added', 'removed', 'changed', 'mode-changed']

/** Whether two entries of one path hold the same bytes for a reader (type, size, chunks, target). */
function sameContent (a: ManifestEntry, b: ManifestEntry): boolean {
  if (a.type !== b.type) return false
  if (a.type === 'file') return sameChunks(a, b as FileEntry)
  if (a.type === 'symlink') return b.type === 'symlink' && a.target === b.target
  return true
}

function sameChunks (a: FileEntry, b: FileEntry): boolean {
  if (a.size !== b.size || a.chunks.length !== b.chunks.length) return false
  for (let i = 0; i < a.chunks.length; i++) {
    const x = a.chunks[i] as FileEntry['chunks'][number]
    const y = b.chunks[i] as FileEntry['chunks'][number]
    if (x.size !== y.size || Buffer.compare(x.id, y.id) !== 0) return false
  }
  return true
}

function modeOf (e: ManifestEntry): number | undefined {
  return e.type === 'symlink' ? undefined : e.mode
}

/** The change between two entries of one path, or undefined when a reader sees the same thing. */
export function compareEntries (older: ManifestEntry, newer: ManifestEntry): PathChange | undefined {
  const fromMode = modeOf(older)
  const toMode = modeOf(newer)
  const modes = fromMode === undefined || toMode === undefined ? {} : { fromMode, toMode }
  if (!sameContent(older, newer)) return { change: 'changed', path: newer.path, type: newer.type, ...modes }
  if (fromMode !== toMode) return { change: 'mode-changed', path: newer.path, type: newer.type, ...modes }
  return undefined
}

/**
 * Merges the entries of an older and a newer manifest (each in canonical order, as ManifestReader
 * guarantees) into the changes between them, in canonical order of their paths.
 */
export async function * diffManifests (older: AsyncIterable<ManifestEntry>, newer: AsyncIterable<ManifestEntry>): AsyncGenerator<PathChange> {
  const a = older[Symbol.asyncIterator]()
  const b = newer[Symbol.asyncIterator]()
  try {
    let x = await a.next()
    let y = await b.next()
    while (x.done !== true || y.done !== true) {
      const order = x.done === true ? 1 : y.done === true ? -1 : comparePaths(x.value.path, y.value.path)
      if (order < 0) {
        const e = x.value as ManifestEntry
        yield { change: 'removed', path: e.path, type: e.type }
        x = await a.next()
      } else if (order > 0) {
        const e = y.value as ManifestEntry
        yield { change: 'added', path: e.path, type: e.type }
        y = await b.next()
      } else {
        const change = compareEntries(x.value as ManifestEntry, y.value as ManifestEntry)
        if (change !== undefined) yield change
        x = await a.next()
        y = await b.next()
      }
    }
  } finally {
    await a.return?.()
    await b.return?.()
  }
}
