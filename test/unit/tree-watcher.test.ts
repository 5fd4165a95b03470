import { mkdir, mkdtemp, rename, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { TreeWatcher } from '../../agent/publish/tree-watcher.js'
import { waitFor } from '../../agent/demo/local-cluster.js'

// The source watcher on a real temp dir: one watch per directory, new directories watched as they appear,
// removed ones dropped, the source's own replacement (a `latest` symlink flipped) seen.

const dirs: string[] = []
const watchers: TreeWatcher[] = []
afterEach(async () => {
  for (const w of watchers.splice(0)) w.close()
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true })
})

async function watched (root: string): Promise<{ w: TreeWatcher, changes: () => number, errors: Error[] }> {
  let n = 0
  const errors: Error[] = []
  const w = new TreeWatcher(root, { onChange: () => { n++ }, onError: err => errors.push(err) })
  watchers.push(w)
  await w.start()
  return { w, changes: () => n, errors }
}

describe('TreeWatcher', () => {
  it('watches each directory once, sees changes deep in the tree and in directories made later', async () => {
    const tmp = await mkdtemp(join(tmpdir(), 'deltamesh-watch-'))
    dirs.push(tmp)
    await mkdir(join(tmp, 'a', 'b'), { recursive: true })
    await writeFile(join(tmp, 'a', 'b', 'f'), '1')
    const { w, changes, errors } = await watched(tmp)
    expect(w.dirs).toBe(3)
    await writeFile(join(tmp, 'a', 'b', 'f'), '2')
    await waitFor('a change deep in the tree', async () => changes() > 0, 5_000, 20)
    await mkdir(join(tmp, 'new', 'deeper'), { recursive: true })
    await waitFor('the new directories watched', async () => w.dirs === 5, 5_000, 20)
    const seen = changes()
    await writeFile(join(tmp, 'new', 'deeper', 'g'), 'x')
    await waitFor('a change in a directory made after the start', async () => changes() > seen, 5_000, 20)
    await rm(join(tmp, 'a'), { recursive: true })
    await w.refresh()
    expect(w.dirs).toBe(3)
    expect(errors).toEqual([])
  })

  it('sees the source itself replaced, and reports once when there are more directories than it may watch', async () => {
    const tmp = await mkdtemp(join(tmpdir(), 'deltamesh-watch-'))
    dirs.push(tmp)
    await mkdir(join(tmp, 'c1', 'x'), { recursive: true })
    await mkdir(join(tmp, 'c2', 'y', 'z'), { recursive: true })
    await symlink('c1', join(tmp, 'latest'))
    const { w, changes } = await watched(join(tmp, 'latest'))
    await symlink('c2', join(tmp, 'latest.new'))
    await rename(join(tmp, 'latest.new'), join(tmp, 'latest'))
    await waitFor('the flip seen', async () => changes() > 0, 5_000, 20)
    await waitFor('the new target watched', async () => w.dirs === 3, 5_000, 20)
    // the top of the new target is watched too (not the old directory under the same name)
    const seen = changes()
    await writeFile(join(tmp, 'c2', 'top-level-file'), 'x')
    await waitFor('a change at the top of the new target', async () => changes() > seen, 5_000, 20)

    const errors: Error[] = []
    const small = new TreeWatcher(join(tmp, 'c2'), { onChange: () => {}, onError: err => errors.push(err) }, 2)
    watchers.push(small)
    await small.start()
    await small.refresh()
    expect(small.dirs).toBe(2)
    expect(errors.map(e => e.name)).toEqual(['TreeWatcherLimitError'])
  })
})
