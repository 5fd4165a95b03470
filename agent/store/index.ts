// The store as one object: one LevelDB holding the chunk index and the catalog. Close it once, at the end.
import { openDb, type StoreDb } from './db.js'
import { LevelChunkIndex, type LevelChunkIndexEvents, type LevelChunkIndexInit } from './chunk-index.js'
import { LevelCatalog, type LevelCatalogEvents } from './catalog.js'
import type { Catalog, ChunkIndex } from './types.js'

export interface StoreOptions extends LevelChunkIndexInit {
  events?: LevelChunkIndexEvents & LevelCatalogEvents
}

export interface Store {
  db: StoreDb
  index: ChunkIndex
  catalog: Catalog
  /** Waits for chunk reads under way, stops the reader thread, then the database. Idempotent. */
  close: () => Promise<void>
}

export async function openStore (dbPath: string, options: StoreOptions = {}): Promise<Store> {
  const db = await openDb(dbPath)
  let index: LevelChunkIndex
  try {
    index = await LevelChunkIndex.open(db, options.events, options)
  } catch (err) {
    await db.close()
    throw err
  }
  const catalog = new LevelCatalog(db, options.events)
  let closing: Promise<void> | undefined
  const close = async (): Promise<void> => {
    closing ??= (async () => {
      try { await index.close() } finally { await db.close() }
    })()
    await closing
  }
  return { db, index, catalog, close }
}

export { LevelChunkIndex, LevelCatalog }
export type { LevelChunkIndexEvents, LevelCatalogEvents, StoreDb }
export * from './errors.js'
export type * from './types.js'
