// Root records (ROOT table): small JSON, validated on the way in and on the way out.
import { isAbsolute } from 'node:path'
import type { StoreRoot } from './types.js'
import { decodeJson, encodeJson, isNonNegInt, isRecord, PREFIX } from './db.js'
import { StoreCorruptError } from './errors.js'

const KINDS: ReadonlySet<string> = new Set(['source', 'staging', 'version'])

/** Throws a TypeError for a root its caller built wrong (relative path, unknown kind). */
export function validateRootFields (root: Omit<StoreRoot, 'id'>): void {
  if (typeof root.path !== 'string' || !isAbsolute(root.path) || root.path.includes('\0')) throw new TypeError(`Store root path must be absolute: ${String(root.path)}`)
  if (!KINDS.has(root.kind)) throw new TypeError(`Unknown store root kind ${String(root.kind)}`)
  if (root.tree !== undefined && typeof root.tree !== 'string') throw new TypeError('Store root tree must be a string')
  if (root.seq !== undefined && !isNonNegInt(root.seq)) throw new TypeError(`Store root seq must be a non-negative integer: ${String(root.seq)}`)
}

export function encodeRoot (root: StoreRoot): Buffer {
  const { path, kind, tree, seq } = root
  return encodeJson({ path, kind, tree, seq })
}

export function decodeRoot (k: Buffer, v: Buffer): StoreRoot {
  if (k.length !== 5 || k[0] !== PREFIX.ROOT) throw new StoreCorruptError('ROOT', `malformed key ${k.toString('hex')}`)
  const id = k.readUInt32BE(1)
  let raw: unknown
  try { raw = decodeJson(v) } catch (err) { throw new StoreCorruptError('ROOT', `root ${id} is not JSON`, { cause: err }) }
  if (!isRecord(raw)) throw new StoreCorruptError('ROOT', `root ${id} is not an object`)
  const { path, kind, tree, seq } = raw
  if (typeof path !== 'string' || typeof kind !== 'string' || !KINDS.has(kind)) throw new StoreCorruptError('ROOT', `root ${id} lacks path or kind`)
  if (tree !== undefined && typeof tree !== 'string') throw new StoreCorruptError('ROOT', `root ${id} tree is not a string`)
  if (seq !== undefined && !isNonNegInt(seq)) throw new StoreCorruptError('ROOT', `root ${id} seq is not an integer`)
  const root: StoreRoot = { id, path, kind: kind as StoreRoot['kind'] }
  if (tree !== undefined) root.tree = tree
  if (seq !== undefined) root.seq = seq
  return root
}
