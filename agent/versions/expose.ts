// Exposing a complete version: the tree's current link and the subscription's path flipped to its directory
// (each a temporary link renamed over the old one), then TreeRecord.currentSeq. finalizeVersion does it
// when a version is built (unless the subscription's gate refuses it); `deltamesh accept` does it by hand for
// a version the gate refused.
import type { HomeLayout } from '../core/home.js'
import { versionName } from '../core/home.js'
import type { Catalog, TreeRecord } from '../store/types.js'
import { flipSymlink } from '../fs/fs-safe.js'
import { LinkFlipError } from './errors.js'

export interface FlipResult {
  tree: TreeRecord
  /** The subscription path, when the tree has one (flipped unless subscriptionError). */
  path?: string
  /** The subscription path could not be flipped (the version is current all the same). */
  subscriptionError?: Error
}

/** Flips trees/<tree>/current (throws LinkFlipError) and the subscription path (its error is returned). */
export async function flipToVersion (ctx: { home: HomeLayout, catalog: Catalog }, tree: string, seq: number, generation = 0): Promise<FlipResult> {
  const current = ctx.home.currentLink(tree)
  await flipSymlink(current, `versions/${versionName(seq, generation)}`).catch(err => { throw new LinkFlipError(tree, seq, current, { cause: err }) })
  const record = await ctx.catalog.getTree(tree) ?? { name: tree }
  const path = record.subscribedTo
  if (path === undefined) return { tree: record }
  let subscriptionError: Error | undefined
  await flipSymlink(path, ctx.home.versionDir(tree, seq, generation)).catch(err => { subscriptionError = new LinkFlipError(tree, seq, path, { cause: err }) })
  return { tree: record, path, subscriptionError }
}
