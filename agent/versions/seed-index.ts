import type { ChunkingParams } from '../../protocol/manifest.js'
import type { Logger } from '../core/log.js'
import { safeJoin } from '../fs/fs-safe.js'
import type { ChunkIndex, PlacedChunk, StoreRoot } from '../store/types.js'

/**
 * The files of an operator's seed copy that are not the version's: their chunks, cut as the publisher would
 * cut them, become local sources (an edited ISO in the seed still lends its unchanged chunks). The seed's
 * store root is found or added once, on the first such file.
 */
export class SeedIndex {
  private root: Promise<StoreRoot> | undefined

  constructor (private readonly o: {
    index: ChunkIndex
    tree: string
    chunkFile?: (path: string, params: ChunkingParams, signal?: AbortSignal) => Promise<PlacedChunk[]>
    log: Logger
    signal?: AbortSignal
  }) {}

  async add (seed: { dir: string, chunking: ChunkingParams }, relPath: string): Promise<void> {
    const chunkFile = this.o.chunkFile
    if (chunkFile === undefined) return
    this.root ??= this.findOrAddRoot(seed.dir)
    const root = await this.root
    try {
      const chunks = await chunkFile(safeJoin(seed.dir, relPath), seed.chunking, this.o.signal)
      await this.o.index.indexFile(root.id, relPath, chunks)
    } catch (err) {
      this.o.signal?.throwIfAborted()
      // a seed file that cannot be read lends nothing; the network has it
      this.o.log.debug({ path: relPath, err }, 'seed file not chunked')
    }
  }

  private async findOrAddRoot (dir: string): Promise<StoreRoot> {
    const roots = await this.o.index.listRoots()
    return roots.find(r => r.kind === 'source' && r.path === dir) ?? await this.o.index.addRoot({ kind: 'source', path: dir, tree: this.o.tree })
  }
}
