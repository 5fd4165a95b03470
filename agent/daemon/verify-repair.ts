// `deltamesh verify [--repair]` in the agent (and without one): re-hash a held version against its signed
// manifest; with repair, rebuild what differs (versions/repair.ts) and verify again, so the answer is what
// the disk holds after the repair.
import type { FileEntry, SymlinkEntry } from '../../protocol/manifest.js'
import type { Catalog, ChunkIndex } from '../store/types.js'
import { verifyVersion } from '../versions/verify.js'
import { repairVersion, type RepairFetch } from '../versions/repair.js'
import type { VerifySummary } from '../api/api.js'

/** Damaged entries kept for one repair: beyond this, a second `verify --repair` takes the rest. */
export const MAX_REPAIR_ENTRIES = 10_000

export interface VerifyComponents {
  catalog: Catalog
  index: Pick<ChunkIndex, 'readChunk' | 'indexFile' | 'getRoot'>
  fetch?: RepairFetch
}

export async function verifyTree (c: VerifyComponents, tree: string, options: { seq?: number, repair?: boolean }, signal?: AbortSignal): Promise<VerifySummary> {
  const damaged: Array<FileEntry | SymlinkEntry> = []
  const first = await verifyVersion(c.catalog, tree, options.seq, signal, e => { if (options.repair === true && damaged.length < MAX_REPAIR_ENTRIES) damaged.push(e) })
  if (options.repair !== true || first.problems.length === 0) return first
  const report = await repairVersion(c, tree, first.seq, damaged, signal)
  const after = await verifyVersion(c.catalog, tree, first.seq, signal)
  return { ...after, repair: { ...report, problemsBefore: first.problems } }
}
