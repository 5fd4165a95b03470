import type { FileEntry } from '../../protocol/manifest.js'
import type { Logger } from '../core/log.js'
import type { FsBatch } from '../fs/fs-batch.js'
import { safeJoin } from '../fs/fs-safe.js'
import { StagingError, type VersionContext } from './errors.js'
import { wrapError } from './install.js'

/**
 * Each hardlink entry (`linkTo`) becomes a link to its target's staging file (complete, with its final mode and
 * times); a resumed build keeps one already made. Where the filesystem refuses a link (EMLINK, EPERM) the file
 * is copied from the target instead: the same bytes, one more inode.
 */
export async function makeHardlinks (o: { fs: FsBatch, stagingDir: string, entries: FileEntry[], log: Logger, context: VersionContext, signal?: AbortSignal }): Promise<void> {
  for (const entry of o.entries) {
    o.signal?.throwIfAborted()
    const source = safeJoin(o.stagingDir, entry.linkTo as string)
    const target = safeJoin(o.stagingDir, entry.path)
    const expect = { size: entry.size, mode: entry.mode, mtimeMs: entry.mtimeMs }
    const at = { ...o.context, path: entry.path }
    try {
      const outcome = await o.fs.run({ type: 'link', source, target, expect, replace: true })
      if (outcome === 'linked') continue
      if (outcome === 'changed') throw new StagingError(at, `hardlink target ${JSON.stringify(entry.linkTo)} is not the complete file the manifest describes`)
      o.log.debug({ path: entry.path }, 'hardlink refused; copying the file instead')
      await o.fs.run({ type: 'adopt', source, target, size: entry.size, copy: true, replace: true })
      await o.fs.run({ type: 'finish', path: target, mode: entry.mode, mtimeMs: entry.mtimeMs, mtimeNs: entry.mtimeNs })
    } catch (err) {
      throw wrapError(at, err)
    }
  }
}
