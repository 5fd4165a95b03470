// One soak version's change to the source tree: small and stationary, so that nothing the agents hold has a
// reason to grow with the version count. A few small files edited in place, as many deleted as added, a few
// renamed (to fresh names, so names do not grow), bytes inserted in one image and as many cut from its end
// (its size stays), the repository index rewritten. tree-gen's mutateTree adds 1 % of the files at 20–220 KB
// each per version: over 1,000 versions that grows a 20,000-file tree by gigabytes, which a soak must not
// confuse with a leak.
import { open, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { listFiles, prng, pseudoRandomBytes } from '../../agent/demo/tree-gen.js'

export interface SoakChange { edited: number, added: number, deleted: number, renamed: number, imageBytesMoved: number }

/** Share of the small files edited per version, and deleted (= added, = renamed). */
const EDIT_SHARE = 0.003
const CHURN_SHARE = 0.0005
/** Bytes inserted in (and cut from the end of) one image per version. */
const IMAGE_INSERT = 64 * 1024

export async function mutateForSoak (root: string, seed: string, version: number, smallMax: number): Promise<SoakChange> {
  const rand = prng(`${seed}/soak/${version}`)
  const all = await listFiles(root)
  const small = all.filter(p => p.startsWith('Packages/'))
  const images = all.filter(p => p.startsWith('images/'))
  const pickOut = (): string => small.splice(Math.floor(rand() * small.length), 1)[0] as string
  const change: SoakChange = { edited: 0, added: 0, deleted: 0, renamed: 0, imageBytesMoved: 0 }
  const edits = Math.max(1, Math.round(small.length * EDIT_SHARE))
  const churn = Math.max(1, Math.round(small.length * CHURN_SHARE))
  for (let i = 0; i < edits && small.length > 0; i++) {
    const path = join(root, pickOut())
    const data = await readFile(path)
    const patch = pseudoRandomBytes(`${seed}/edit/${version}/${i}`, 256 + Math.floor(rand() * 3840))
    const at = Math.floor(rand() * (data.length + 1))
    await writeFile(path, Buffer.concat([data.subarray(0, at), patch, data.subarray(Math.min(data.length, at + patch.length))]))
    change.edited++
  }
  for (let i = 0; i < churn && small.length > 0; i++) {
    const rel = pickOut()
    await rm(join(root, rel))
    change.deleted++
    const added = join(root, dirname(rel), `pkg-a${version}-${i}.rpm`)
    await writeFile(added, pseudoRandomBytes(`${seed}/add/${version}/${i}`, Math.floor(rand() ** 3 * smallMax)))
    change.added++
  }
  for (let i = 0; i < churn && small.length > 0; i++) {
    const rel = pickOut()
    await rename(join(root, rel), join(root, dirname(rel), `pkg-r${version}-${i}.rpm`))
    change.renamed++
  }
  if (images.length > 0) {
    const path = join(root, images[version % images.length] as string)
    const data = await readFile(path)
    const at = Math.floor(rand() * data.length)
    const moved = Math.min(IMAGE_INSERT, data.length - at)
    const next = Buffer.concat([data.subarray(0, at), pseudoRandomBytes(`${seed}/insert/${version}`, moved), data.subarray(at, data.length - moved)])
    const handle = await open(path, 'w')
    try { await handle.write(next) } finally { await handle.close() }
    change.imageBytesMoved = moved
  }
  await writeFile(join(root, 'repodata', 'repomd.xml'), `<repomd seed="${seed}" version="${version}"/>\n`)
  return change
}
