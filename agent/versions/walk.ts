import { InvalidMessageError } from '../../protocol/errors.js'
import { ManifestOrderChecker, type DirEntry, type FileEntry, type ManifestEntry, type SymlinkEntry } from '../../protocol/manifest.js'
import { parentOf, validateRelativePath } from '../../protocol/paths.js'
import { compileFilter, type PathFilter } from './filter.js'


export type WalkEvent =
  /** A directory to create: the directory is selected itself, or is the parent of something selected. */
  | { kind: 'enter', entry: DirEntry }
  | { kind: 'file', entry: FileEntry }
  | { kind: 'symlink', entry: SymlinkEntry }
  /** Everything under an entered directory has been seen (post-order: deepest directories leave first). */
  | { kind: 'leave', entry: DirEntry }

interface Open { entry: DirEntry, entered: boolean }

/**
 * Turns a manifest stream into the events of materializing it under a filter, holding only the chain of
 * open directories (one per depth level). The manifest's structure is checked again here whatever its
 * source (clean relative paths, strict canonical order, every parent a directory entry seen before), so
 * nothing can be placed under a file or a symlink, and the size of a file must match its chunks.
 * A directory that the filter rejects is still entered, lazily, when something selected lies under it.
 */
export async function * walkSelected (entries: AsyncIterable<ManifestEntry>, filter?: PathFilter, signal?: AbortSignal): AsyncGenerator<WalkEvent> {
  const checker = new ManifestOrderChecker()
  const open: Open[] = []
  for await (const entry of entries) {
    signal?.throwIfAborted()
    validateRelativePath(entry.path)
    checker.check(entry)
    if (entry.type === 'file') checkFileEntry(entry)
    const parent = parentOf(entry.path)
    while (open.length > 0 && (open[open.length - 1] as Open).entry.path !== parent) {
      const done = open.pop() as Open
      if (done.entered) yield { kind: 'leave', entry: done.entry }
    }
    const selected = filter === undefined || filter(entry.path, entry.type)
    if (selected) {
      for (const o of open) {
        if (!o.entered) { o.entered = true; yield { kind: 'enter', entry: o.entry } }
      }
    }
    switch (entry.type) {
      case 'dir':
        open.push({ entry, entered: selected })
        if (selected) yield { kind: 'enter', entry }
        break
      case 'file':
        if (selected) yield { kind: 'file', entry }
        break
      case 'symlink':
        if (selected) yield { kind: 'symlink', entry }
        break
    }
  }
  while (open.length > 0) {
    const done = open.pop() as Open
    if (done.entered) yield { kind: 'leave', entry: done.entry }
  }
}

function checkFileEntry (entry: FileEntry): void {
  let total = 0
  for (const c of entry.chunks) total += c.size
  if (total !== entry.size) throw new InvalidMessageError(`manifest entry ${JSON.stringify(entry.path)}: chunks add up to ${total} bytes, size says ${entry.size}`)
}

/**
 * Looks entries of another manifest (the previous version) up by path while both are read in canonical
 * order: a merge join, so memory stays one entry whatever the size of either manifest.
 */
export class ManifestCursor {
  private readonly iterator: AsyncIterator<ManifestEntry>
  private head: ManifestEntry | undefined
  private finished = false

  constructor (entries: AsyncIterable<ManifestEntry>, private readonly compare: (a: string, b: string) => number) {
    this.iterator = entries[Symbol.asyncIterator]()
  }

  /** The entry at `path`, if any. Calls must come with non-decreasing paths. */
  async find (path: string): Promise<ManifestEntry | undefined> {
    for (;;) {
      if (this.head === undefined) {
        if (this.finished) return undefined
        const next = await this.iterator.next()
        if (next.done === true) { this.finished = true; return undefined }
        this.head = next.value
      }
      const c = this.compare(this.head.path, path)
      if (c === 0) return this.head
      if (c > 0) return undefined
      this.head = undefined
    }
  }

  async close (): Promise<void> {
    if (!this.finished) await this.iterator.return?.()
    this.finished = true
  }
}

/**
 * A filter from include/exclude pattern lists (see filter.ts for the rules); exclude wins; no include means
 * everything. Throws FilterPatternError for a pattern that cannot be meaningful.
 */
export function globFilter (include: string[] | undefined, exclude: string[] | undefined): PathFilter | undefined {
  return compileFilter({ include, exclude })
}
