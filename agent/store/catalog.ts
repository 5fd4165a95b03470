// The catalog on LevelDB: content-addressed blobs (root blobs, manifest chunks), trees, versions, the
// scanner's cache and small state of other components. Key layout: db.ts. Everything decoded from disk is
// `unknown` until checked here, so a damaged or foreign database fails with StoreCorruptError, not later.
import { MAX_DELTA_TARGET_BYTES } from '../../protocol/wire-limits.js'
import { Packr } from 'msgpackr'
import { chunkIdOf, idsEqual, isChunkId, verifyChunk, type ChunkId } from '../../protocol/chunk-id.js'
import { LimitExceededError } from '../../protocol/errors.js'
import { CHUNK_ID_BYTES, MAX_CHUNK_SIZE, MAX_ROOT_BYTES } from '../../protocol/limits.js'
import { bytesToPath, validateTreeName } from '../../protocol/paths.js'
import type { Catalog, ScanCacheEntry, TreeRecord, VersionRecord } from './types.js'
import { decodeJson, deleteRange, encodeJson, key, NUL, PREFIX, range, readU64, u64, type StoreDb } from './db.js'
import { StoreCorruptError } from './errors.js'
import { signatureBytes } from '../../protocol/signature-delta.js'
import { decodeScanEntry, decodeTree, decodeVersion, encodeScanEntry } from './records.js'

/** A chunk's signature: one entry per full block of the largest chunk. */
const MAX_SIGNATURE_BYTES = signatureBytes(MAX_CHUNK_SIZE)

/** Blobs are root blobs or manifest chunks; neither may exceed the larger of their two limits. */
const MAX_BLOB_BYTES = Math.max(MAX_CHUNK_SIZE, MAX_ROOT_BYTES)

export interface LevelCatalogEvents {
  /** A stored blob no longer hashes to its id (disk or database damage); it was deleted. */
  onCorruptBlob?: (id: ChunkId) => void
}

export class LevelCatalog implements Catalog {
  // Plain maps, no shared record structures: each value decodes on its own, whatever wrote it.
  private readonly packr = new Packr({ useRecords: false, moreTypes: false })

  constructor (private readonly db: StoreDb, private readonly events: LevelCatalogEvents = {}) {}

  async putBlob (id: ChunkId, bytes: Uint8Array): Promise<void> {
    if (bytes.byteLength > MAX_BLOB_BYTES) throw new LimitExceededError('blob size', bytes.byteLength, MAX_BLOB_BYTES)
    verifyChunk(id, bytes, 'putBlob')
    await this.db.put(blobKey(id), Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength))
  }

  async getBlob (id: ChunkId): Promise<Uint8Array | undefined> {
    if (!isChunkId(id)) return undefined
    const k = blobKey(id)
    const bytes = await this.db.get(k)
    if (bytes === undefined) return undefined
    if (!idsEqual(chunkIdOf(bytes), id)) {
      await this.db.del(k)
      this.events.onCorruptBlob?.(id)
      return undefined
    }
    return bytes
  }

  async hasBlob (id: ChunkId): Promise<boolean> {
    return isChunkId(id) && await this.db.has(blobKey(id))
  }

  async deleteBlob (id: ChunkId): Promise<void> {
    if (isChunkId(id)) await this.db.del(blobKey(id))
  }

  async putDelta (deltaKey: Uint8Array, bytes: Uint8Array): Promise<void> {
    if (bytes.byteLength > MAX_DELTA_TARGET_BYTES) throw new LimitExceededError('delta size', bytes.byteLength, MAX_DELTA_TARGET_BYTES)
    if (!isChunkId(deltaKey)) throw new TypeError(`Delta key must be ${CHUNK_ID_BYTES} bytes`)
    await this.db.put(key(PREFIX.DELTA, deltaKey), Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength))
  }

  async getDelta (deltaKey: Uint8Array): Promise<Uint8Array | undefined> {
    if (!isChunkId(deltaKey)) return undefined
    return await this.db.get(key(PREFIX.DELTA, deltaKey))
  }

  async getDeltas (deltaKeys: Uint8Array[]): Promise<Array<Uint8Array | undefined>> {
    return await this.getManyById(PREFIX.DELTA, deltaKeys)
  }

  async deleteDelta (deltaKey: Uint8Array): Promise<void> {
    if (isChunkId(deltaKey)) await this.db.del(key(PREFIX.DELTA, deltaKey))
  }

  async putSignature (id: ChunkId, signature: Uint8Array): Promise<void> {
    await this.db.put(...signatureRecord(id, signature))
  }

  async getSignature (id: ChunkId): Promise<Uint8Array | undefined> {
    if (!isChunkId(id)) return undefined
    return await this.db.get(key(PREFIX.SIG, id))
  }

  async getSignatures (ids: ChunkId[]): Promise<Array<Uint8Array | undefined>> {
    return await this.getManyById(PREFIX.SIG, ids)
  }

  /** Values under `prefix` for 32-byte ids, in one read and in their order; a malformed id reads as absent. */
  private async getManyById (prefix: number, ids: Uint8Array[]): Promise<Array<Uint8Array | undefined>> {
    const valid = ids.filter(isChunkId)
    if (valid.length === 0) return ids.map(() => undefined)
    const values = await this.db.getMany(valid.map(id => key(prefix, id)))
    let v = 0
    return ids.map(id => isChunkId(id) ? values[v++] : undefined)
  }

  async putSignatures (entries: Array<[ChunkId, Uint8Array]>): Promise<void> {
    if (entries.length === 0) return
    const batch = this.db.batch()
    for (const [id, signature] of entries) batch.put(...signatureRecord(id, signature))
    await batch.write()
  }

  async deleteSignature (id: ChunkId): Promise<void> {
    if (isChunkId(id)) await this.db.del(key(PREFIX.SIG, id))
  }

  async deleteSignatures (ids: ChunkId[]): Promise<void> {
    const valid = ids.filter(isChunkId)
    if (valid.length === 0) return
    const batch = this.db.batch()
    for (const id of valid) batch.del(key(PREFIX.SIG, id))
    await batch.write()
  }

  async putTree (tree: TreeRecord): Promise<void> {
    await this.db.put(key(PREFIX.TREE, validateTreeName(tree.name)), encodeJson(tree))
  }

  async getTree (name: string): Promise<TreeRecord | undefined> {
    const v = await this.db.get(key(PREFIX.TREE, validateTreeName(name)))
    return v === undefined ? undefined : decodeTree(name, parseJson('TREE', v))
  }

  async listTrees (): Promise<TreeRecord[]> {
    const out: TreeRecord[] = []
    for await (const [k, v] of this.db.iterator(range(Buffer.of(PREFIX.TREE)))) {
      out.push(decodeTree(k.toString('utf8', 1), parseJson('TREE', v)))
    }
    return out
  }

  async putVersion (version: VersionRecord): Promise<void> {
    const { tree, seq, ...rest } = version
    await this.db.put(versionKey(tree, seq), this.packr.pack(rest))
  }

  async getVersion (tree: string, seq: number): Promise<VersionRecord | undefined> {
    const v = await this.db.get(versionKey(tree, seq))
    return v === undefined ? undefined : decodeVersion(tree, seq, this.unpack('VERSION', v))
  }

  async listVersions (tree: string): Promise<VersionRecord[]> {
    const prefix = key(PREFIX.VERSION, validateTreeName(tree), NUL)
    const out: VersionRecord[] = []
    // seq is big-endian in the key, so LevelDB's byte order is numeric order: 2 < 10 < 100.
    for await (const [k, v] of this.db.iterator(range(prefix))) {
      if (k.length !== prefix.length + 8) throw new StoreCorruptError('VERSION', `malformed key ${k.toString('hex').slice(0, 120)}`)
      const seq = readU64(k, prefix.length)
      out.push(decodeVersion(tree, seq, this.unpack('VERSION', v)))
    }
    return out
  }

  async deleteVersion (tree: string, seq: number): Promise<void> {
    await this.db.del(versionKey(tree, seq))
  }

  async getScanEntry (sourcePath: string, relPath: string): Promise<ScanCacheEntry | undefined> {
    const v = await this.db.get(scanKey(sourcePath, relPath))
    return v === undefined ? undefined : decodeScanEntry(this.unpack('SCAN', v))
  }

  async getScanEntries (sourcePath: string, relPaths: string[]): Promise<Array<ScanCacheEntry | undefined>> {
    if (relPaths.length === 0) return []
    const values = await this.db.getMany(relPaths.map(relPath => scanKey(sourcePath, relPath)))
    return values.map(v => v === undefined ? undefined : decodeScanEntry(this.unpack('SCAN', v)))
  }

  async putScanEntries (sourcePath: string, entries: Array<[relPath: string, entry: ScanCacheEntry]>): Promise<void> {
    if (entries.length === 0) return
    const batch = this.db.batch()
    for (const [relPath, entry] of entries) batch.put(scanKey(sourcePath, relPath), this.packr.pack(encodeScanEntry(entry)))
    await batch.write()
  }

  async pruneScanCache (sourcePath: string, keep: (relPath: string) => boolean): Promise<void> {
    const prefix = scanPrefix(sourcePath)
    await deleteRange(this.db, prefix, undefined, k => keep(bytesToPath(k.subarray(prefix.length))))
  }

  async getState<T> (stateKey: string): Promise<T | undefined> {
    const v = await this.db.get(stateKeyOf(stateKey))
    // The caller names the type it stored under this key; JSON is all we can check here.
    return v === undefined ? undefined : parseJson('STATE', v) as T
  }

  async putState (stateKey: string, value: unknown): Promise<void> {
    const json = JSON.stringify(value)
    if (json === undefined) throw new TypeError(`State ${stateKey}: value is not JSON-able (use deleteState to remove)`)
    await this.db.put(stateKeyOf(stateKey), Buffer.from(json, 'utf8'))
  }

  async deleteState (stateKey: string): Promise<void> {
    await this.db.del(stateKeyOf(stateKey))
  }

  private unpack (table: string, v: Buffer): unknown {
    try {
      return this.packr.unpack(v) as unknown
    } catch (err) {
      throw new StoreCorruptError(table, 'value is not msgpack', { cause: err })
    }
  }
}

function blobKey (id: ChunkId): Buffer {
  if (!isChunkId(id)) throw new TypeError(`Blob id must be ${CHUNK_ID_BYTES} bytes`)
  return key(PREFIX.BLOB, id)
}

function versionKey (tree: string, seq: number): Buffer {
  return key(PREFIX.VERSION, validateTreeName(tree), NUL, u64(seq))
}

function scanPrefix (sourcePath: string): Buffer {
  return key(PREFIX.SCAN, noNul('source path', sourcePath), NUL)
}

/** The database key and value of a chunk's signature, checked (a malformed id or an oversize signature throws). */
function signatureRecord (id: ChunkId, signature: Uint8Array): [Buffer, Buffer] {
  if (!isChunkId(id)) throw new TypeError(`Chunk id must be ${CHUNK_ID_BYTES} bytes`)
  if (signature.byteLength > MAX_SIGNATURE_BYTES) throw new LimitExceededError('signature size', signature.byteLength, MAX_SIGNATURE_BYTES)
  return [key(PREFIX.SIG, id), Buffer.from(signature.buffer, signature.byteOffset, signature.byteLength)]
}

function scanKey (sourcePath: string, relPath: string): Buffer {
  return key(PREFIX.SCAN, noNul('source path', sourcePath), NUL, noNul('relative path', relPath))
}

function stateKeyOf (stateKey: string): Buffer {
  if (stateKey.length === 0) throw new TypeError('State key must not be empty')
  return key(PREFIX.STATE, stateKey)
}

/** '\0' ends the strings in our keys; one inside a string would let two keys collide. */
function noNul (what: string, s: string): string {
  if (typeof s !== 'string' || s.length === 0 || s.includes('\0')) throw new TypeError(`Invalid ${what} ${JSON.stringify(String(s).slice(0, 200))}`)
  return s
}

function parseJson (table: string, v: Buffer): unknown {
  try {
    return decodeJson(v)
  } catch (err) {
    throw new StoreCorruptError(table, 'value is not JSON', { cause: err })
  }
}
