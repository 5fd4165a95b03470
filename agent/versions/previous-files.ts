import { idsEqual } from '../../protocol/chunk-id.js'
import type { FileEntry, ManifestEntry } from '../../protocol/manifest.js'
import { comparePaths } from '../../protocol/paths.js'
import type { Logger } from '../core/log.js'
import { ManifestCursor } from './walk.js'

/**
 * The previous version's manifest, walked alongside the new one (both are in canonical order): which files are
 * unchanged, so that their inodes are hardlinked instead of rebuilt. A previous manifest that cannot be read
 * only costs the hardlinks.
 */
export class PreviousFiles {
  private readonly cursor: ManifestCursor
  private broken = false

  constructor (entries: AsyncIterable<ManifestEntry>, private readonly log: Logger, private readonly signal?: AbortSignal) {
    this.cursor = new ManifestCursor(entries, comparePaths)
  }

  /** True when the previous version has this file with the same content, mode and times. */
  async unchanged (entry: FileEntry): Promise<boolean> {
    if (this.broken) return false
    let before: ManifestEntry | undefined
    try {
      before = await this.cursor.find(entry.path)
    } catch (err) {
      this.signal?.throwIfAborted()
      this.broken = true
      this.log.warn({ err }, 'previous manifest unreadable; building without hardlinks')
      return false
    }
    return before?.type === 'file' && sameFile(before, entry)
  }

  async close (): Promise<void> {
    await this.cursor.close()
  }
}

export function sameFile (a: FileEntry, b: FileEntry): boolean {
  // the inode is shared: a link is only right when the times agree to the nanosecond too
  if (a.size !== b.size || a.mode !== b.mode || a.mtimeMs !== b.mtimeMs || (a.mtimeNs ?? 0) !== (b.mtimeNs ?? 0) || a.chunks.length !== b.chunks.length) return false
  for (let i = 0; i < a.chunks.length; i++) {
    const x = a.chunks[i] as FileEntry['chunks'][number]
    const y = b.chunks[i] as FileEntry['chunks'][number]
    if (x.size !== y.size || !idsEqual(x.id, y.id)) return false
  }
  return true
}
