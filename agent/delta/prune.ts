// Retention of small-file deltas. A delta is stored by the key of a (base content, target content) pair, not
// by version, so nothing ties it to the versions it was computed for. Which deltas a site stored is still
// known: the publisher computes them from the newest complete version before the one it publishes, and a
// subscriber keeps those it applied, from the version it held to the one it synced — in both cases a pair of
// consecutive complete versions in this site's own catalog. When a version is pruned, the deltas that start
// from it are therefore the keys of the pairs (pruned version, the next complete version), and they go too;
// a key that a kept pair also implies (a file reverted and changed again the same way) stays.
import { deltaKeyOf } from '../../protocol/delta.js'
import { toHex, fromHex } from '../../protocol/chunk-id.js'
import { openEnvelope } from '../../protocol/envelope.js'
import type { FileEntry, ManifestRoot } from '../../protocol/manifest.js'
import { loadRoot, readManifestEntries } from '../store/manifest-io.js'
import { deltaPairs } from './manifest-delta.js'
import { isLarge } from './chunk-deltas.js'
import type { Catalog, VersionRecord } from '../store/types.js'

/** Files of a version by path, and its manifest's chunks. */
async function filesOf (catalog: Catalog, version: VersionRecord, signal?: AbortSignal): Promise<{ files: Map<string, FileEntry>, manifest: ManifestRoot['chunks'] }> {
  const files = new Map<string, FileEntry>()
  const root = await loadRoot(catalog, openEnvelope(version.envelope).rootHash)
  for await (const e of readManifestEntries(catalog, root, signal)) {
    if (e.type === 'file') files.set(e.path, e)
  }
  return { files, manifest: root.chunks }
}

/** Hex keys of every delta from `base` to `target`: per changed file (per new chunk for large ones), and the manifest's. */
export async function deltaKeysBetween (catalog: Catalog, base: VersionRecord, target: VersionRecord, signal?: AbortSignal): Promise<Set<string>> {
  const { files: before, manifest: baseManifest } = await filesOf(catalog, base, signal)
  const { files: after, manifest: targetManifest } = await filesOf(catalog, target, signal)
  const keys = new Set(deltaPairs(baseManifest, targetManifest).map(p => toHex(p.key)))
  for (const [path, t] of after) {
    const b = before.get(path)
    if (b === undefined) continue
    const same = b.chunks.length === t.chunks.length && b.chunks.every((c, i) => toHex(c.id) === toHex((t.chunks[i] as FileEntry['chunks'][number]).id))
    if (same) continue
    if (isLarge(b.size) || isLarge(t.size)) for (const p of deltaPairs(b.chunks, t.chunks)) keys.add(toHex(p.key))
    else keys.add(toHex(deltaKeyOf(b.chunks.map(c => c.id), t.chunks.map(c => c.id))))
  }
  return keys
}

/**
 * Deletes the deltas that start from the `doomed` versions of one tree (call before their manifest blobs
 * are deleted: the keys are derived from the manifests). `versions`: every version record of the tree.
 * Returns how many stored deltas were deleted. A manifest that cannot be read leaves its deltas in place.
 */
export async function pruneDeltasFrom (catalog: Catalog, versions: VersionRecord[], doomedSeqs: Set<number>, signal?: AbortSignal): Promise<number> {
  const complete = versions.filter(v => v.state === 'complete').sort((a, b) => a.seq - b.seq)
  const pairs = complete.slice(0, -1).map((v, i) => ({ base: v, target: complete[i + 1] as VersionRecord }))
  const doomedKeys = new Set<string>()
  const keptKeys = new Set<string>()
  for (const { base, target } of pairs) {
    const into = doomedSeqs.has(base.seq) ? doomedKeys : keptKeys
    try {
      for (const k of await deltaKeysBetween(catalog, base, target, signal)) into.add(k)
    } catch (err) {
      signal?.throwIfAborted()
      if (into === doomedKeys) continue // unreadable manifest: nothing known to delete for this pair
      throw err // a kept pair we cannot read could protect any key: delete nothing rather than guess
    }
  }
  let deleted = 0
  for (const k of doomedKeys) {
    if (keptKeys.has(k) || await catalog.getDelta(fromHex(k)) === undefined) continue
    await catalog.deleteDelta(fromHex(k))
    deleted++
  }
  return deleted
}
