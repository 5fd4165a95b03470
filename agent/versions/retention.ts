import { readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { toHex } from '../../protocol/chunk-id.js'
import { openEnvelope } from '../../protocol/envelope.js'
import { fromHex } from '../../protocol/chunk-id.js'
import { parseVersionName, type HomeLayout } from '../core/home.js'
import { silentLogger, type Logger } from '../core/log.js'
import type { Catalog, ChunkIndex, StoreRoot, VersionRecord } from '../store/types.js'
import { errnoOf, removeTree } from '../fs/fs-safe.js'
import { loadRoot } from '../store/manifest-io.js'
import { pruneDeltasFrom } from '../delta/prune.js'

/** How many complete versions of a tree are kept when its TreeRecord does not say. */
export const DEFAULT_RETAIN = 3

export interface RetentionComponents {
  index: ChunkIndex
  catalog: Catalog
  home: HomeLayout
  log?: Logger
}

export interface RetentionResult {
  /** Complete versions pruned (record, index root, directory, unshared manifest blobs). */
  removedVersions: number[]
  /** Abandoned staging directories (and orphan version directories) of seqs older than the current one. */
  removedStaging: number[]
  deletedBlobs: number
  /** Stored small-file deltas that started from a pruned version. */
  deletedDeltas: number
  /** Records of versions below the current one that never completed here (announced, skipped, abandoned, failed). */
  removedRecords: number[]
}

/**
 * Keeps the newest `retain` complete versions of `tree` (TreeRecord.retain, default 3) and always the
 * current one. For each older complete version: forget its index root (nothing is served from it any
 * more), delete its directory, delete its manifest and root blobs unless a kept version of any tree
 * references them, then delete its record. Each step is idempotent, so a run cut short is finished by
 * the next. Only directories under this home's trees/<tree>/ are ever deleted: a publisher's versions
 * point at its source directory, which is never touched (and whose index root is shared, so kept).
 * Also removes staging directories of seqs older than the current version (abandoned syncs).
 */
export async function applyRetention (components: RetentionComponents, treeName: string, options: { retain?: number } = {}): Promise<RetentionResult> {
  const { index, catalog, home } = components
  const log = (components.log ?? silentLogger()).child({ component: 'retention', tree: treeName })
  const result: RetentionResult = { removedVersions: [], removedStaging: [], deletedBlobs: 0, deletedDeltas: 0, removedRecords: [] }
  const tree = await catalog.getTree(treeName)
  if (tree === undefined) return result
  const retain = Math.max(1, options.retain ?? tree.retain ?? DEFAULT_RETAIN)
  const current = tree.currentSeq

  const versions = await catalog.listVersions(treeName)
  const complete = versions.filter(v => v.state === 'complete').sort((a, b) => b.seq - a.seq)
  const keptSeqs = new Set(complete.slice(0, retain).map(v => v.seq))
  if (current !== undefined) keptSeqs.add(current)
  const doomed = complete.filter(v => !keptSeqs.has(v.seq)).reverse() // oldest first
  const doomedSeqs = new Set(doomed.map(v => v.seq))

  const keptRootIds = new Set(versions.filter(v => !doomedSeqs.has(v.seq) && v.rootId !== undefined).map(v => v.rootId as number))
  const referenced = doomed.length > 0 ? await referencedBlobs(catalog, treeName, doomedSeqs, log) : new Set<string>()

  // before the blobs go: the keys of those deltas are derived from the doomed versions' manifests
  if (doomed.length > 0) {
    try {
      result.deletedDeltas = await pruneDeltasFrom(catalog, versions, doomedSeqs)
    } catch (err) {
      log.warn({ err }, 'deltas of pruned versions kept: a manifest could not be read')
    }
  }
  for (const version of doomed) {
    const root = version.rootId !== undefined ? await index.getRoot(version.rootId) : undefined
    if (root !== undefined && root.kind !== 'source' && !keptRootIds.has(root.id)) await index.removeRoot(root.id)
    const dir = home.versionDir(treeName, version.seq, version.generation)
    if (version.path === dir || root?.path === dir) await removeTree(dir)
    for (const blob of await blobsOf(catalog, version, log)) {
      if (referenced.has(blob)) continue
      referenced.add(blob) // a blob shared by two doomed versions is deleted once
      await catalog.deleteBlob(fromHex(blob))
      result.deletedBlobs++
    }
    await catalog.deleteVersion(treeName, version.seq)
    result.removedVersions.push(version.seq)
    log.info({ seq: version.seq }, 'version pruned')
  }

  if (current !== undefined) {
    await removeAbandoned(components, treeName, current, keptSeqs, versions, result, log)
    // a version older than the current one can never become current (no rollback): a subscriber that skips
    // versions (a newer one took over its sync) kept their records forever (the 1,000-version soak: +1 per ~6–10)
    for (const v of versions) {
      if (v.seq >= current || v.state === 'complete') continue
      await catalog.deleteVersion(treeName, v.seq)
      result.removedRecords.push(v.seq)
    }
  }
  return result
}

/**
 * Staging dirs of seqs below the current one can never become current (no rollback); orphan version dirs
 * likewise. Of the current seq, the directories of earlier generations (the version before it was rebuilt
 * for a changed filter) and their leftover staging go too; a later generation is a rebuild in progress (or
 * one a crash cut short after its rename, which the next rebuild completes): kept.
 */
async function removeAbandoned (components: RetentionComponents, treeName: string, current: number, keptSeqs: Set<number>, versions: VersionRecord[], result: RetentionResult, log: Logger): Promise<void> {
  const { index, catalog, home } = components
  const roots = await index.listRoots()
  const bySeq = new Map(versions.map(v => [v.seq, v]))
  const currentGeneration = bySeq.get(current)?.generation ?? 0
  const candidates: Array<{ seq: number, dir: string }> = []
  for (const { seq, generation } of await versionEntries(join(home.treeDir(treeName), 'staging'))) {
    if (seq < current || (seq === current && generation > 0 && generation <= currentGeneration)) candidates.push({ seq, dir: home.stagingDir(treeName, seq, generation) })
  }
  for (const { seq, generation } of await versionEntries(home.versionsDir(treeName))) {
    const record = bySeq.get(seq)
    const complete = record?.state === 'complete'
    if (seq === current) {
      if (complete && generation < currentGeneration) candidates.push({ seq, dir: home.versionDir(treeName, seq, generation) })
      continue
    }
    // a version dir without a complete record is an orphan (pruned record, or a crash before the catalog update);
    // so is a generation of a kept version other than the one its record names
    if (seq < current && ((!keptSeqs.has(seq) && !complete) || (complete && (record.generation ?? 0) !== generation))) {
      candidates.push({ seq, dir: home.versionDir(treeName, seq, generation) })
    }
  }
  for (const { seq, dir } of candidates) {
    const root: StoreRoot | undefined = roots.find(r => r.path === dir && r.kind !== 'source')
    if (root !== undefined) await index.removeRoot(root.id)
    await removeTree(dir)
    const record = bySeq.get(seq)
    if (record !== undefined && record.state !== 'complete' && (record.rootId === root?.id || record.path === dir)) {
      const { rootId: _r, path: _p, ...rest } = record
      await catalog.putVersion({ ...rest, state: 'failed', error: `abandoned: ${treeName}@${current} became current first` })
    }
    result.removedStaging.push(seq)
    log.info({ seq, dir }, 'abandoned build removed')
  }
}

async function versionEntries (dir: string): Promise<Array<{ seq: number, generation: number }>> {
  let names: string[]
  try {
    names = await readdir(dir)
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return []
    throw err
  }
  return names.map(parseVersionName).filter(v => v !== undefined)
}

/** Hex ids of a version's root blob and manifest chunks (empty when its envelope or root is unreadable). */
async function blobsOf (catalog: Catalog, version: VersionRecord, log: Logger): Promise<string[]> {
  try {
    const rootHash = openEnvelope(version.envelope).rootHash
    const out = [toHex(rootHash)]
    try {
      const root = await loadRoot(catalog, rootHash)
      for (const c of root.chunks) out.push(toHex(c.id))
    } catch (err) {
      log.debug({ seq: version.seq, err }, 'root blob unreadable; only the root id is considered')
    }
    return out
  } catch (err) {
    log.warn({ seq: version.seq, err }, 'envelope unreadable; its blobs cannot be found')
    return []
  }
}

/** Every blob referenced by a version that stays, in any tree (blobs are content-addressed, so trees may share them). */
async function referencedBlobs (catalog: Catalog, treeName: string, doomedSeqs: Set<number>, log: Logger): Promise<Set<string>> {
  const out = new Set<string>()
  for (const tree of await catalog.listTrees()) {
    for (const version of await catalog.listVersions(tree.name)) {
      if (tree.name === treeName && doomedSeqs.has(version.seq)) continue
      for (const blob of await blobsOf(catalog, version, log)) out.add(blob)
    }
  }
  return out
}
