import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach } from 'vitest'
import { HomeLayout } from '../../agent/core/home.js'
import { openStore, type Store } from '../../agent/store/index.js'
import type { StoreRoot } from '../../agent/store/types.js'
import { makeWritable } from './fs.js'

// The unit tests' world: a temp dir holding an agent home with its store open (TMP/home), and optionally a
// source tree registered as a store root (TMP/src). Each world is closed and removed after its test, read-only
// directories of installed versions included.

export interface StoreWorld { tmp: string, home: HomeLayout, store: Store }
export interface SourceWorld extends StoreWorld { src: string, sourceRoot: StoreRoot }

export interface StoreWorlds {
  /** A temp dir (named `prefix`…) with HOME and its store. */
  create: () => Promise<StoreWorld>
  /** create(), plus TMP/src filled by `fill` and registered as the source of `tree`. */
  withSource: (tree: string, fill?: (src: string) => Promise<void>) => Promise<SourceWorld>
}

/** Registers the afterEach that removes the worlds made in each test. Call once at the top of a test file. */
export function storeWorlds (prefix: string): StoreWorlds {
  const made: StoreWorld[] = []
  afterEach(async () => {
    for (const w of made.splice(0)) {
      await w.store.close()
      await makeWritable(w.tmp)
      await rm(w.tmp, { recursive: true, force: true })
    }
  })
  const create = async (): Promise<StoreWorld> => {
    const tmp = await mkdtemp(join(tmpdir(), prefix))
    const home = new HomeLayout(join(tmp, 'home'))
    await mkdir(home.root)
    const w = { tmp, home, store: await openStore(home.db) }
    made.push(w)
    return w
  }
  return {
    create,
    withSource: async (tree, fill) => {
      const w = await create()
      const src = join(w.tmp, 'src')
      await mkdir(src)
      await fill?.(src)
      return { ...w, src, sourceRoot: await w.store.index.addRoot({ kind: 'source', path: src, tree }) }
    },
  }
}
