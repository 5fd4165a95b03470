import { execFileSync } from 'node:child_process'
import { appendFile, chmod, mkdir, mkdtemp, readFile, rm, symlink, unlink, writeFile } from 'node:fs/promises'
import { createServer, type Server } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { describeTree, generateTree, mutateTree } from '../../agent/demo/tree-gen.js'
import { describeTreeInParallel } from '../../scripts/bench/describe-tree.js'
import { checkTreeMatches, treeDifferences } from '../../scripts/bench/tree-compare.js'

// The bench's mirror check (scripts/bench/tree-compare.ts): its fast describer must say exactly what
// describeTree says, and every kind of difference between a mirror and v2 must fail the check.

let base: string

beforeAll(async () => { base = await mkdtemp(join(tmpdir(), 'deltamesh-bench-compare-')) })
afterAll(async () => { await rm(base, { recursive: true, force: true }) })

describe('describeTreeInParallel', () => {
  it('describes a generated tree exactly as describeTree, before and after a mutation', async () => {
    const root = join(base, 'generated')
    // 1,200 small files: several batches per worker; a 3 MiB image: read in more than one piece
    await generateTree(root, { seed: 'bench-compare', files: 1200, largeBytes: 3 * 1024 * 1024 + 5, largeFiles: 1, smallMax: 4096 })
    await writeFile(join(root, 'empty'), '')
    await symlink('does-not-exist', join(root, 'dangling'))
    const v1 = await describeTreeInParallel(root)
    expect(v1).toStrictEqual(await describeTree(root))
    expect(Object.keys(v1)).toStrictEqual(Object.keys(await describeTree(root)))
    await mutateTree(root, 'bench-compare-v2')
    expect(await describeTreeInParallel(root, 1)).toStrictEqual(await describeTree(root))
  })

  it('describes an empty tree as {}', async () => {
    await mkdir(join(base, 'empty-tree'))
    expect(await describeTreeInParallel(join(base, 'empty-tree'))).toStrictEqual({})
  })

  it('fails as describeTree does on an entry it cannot read, and on a missing root', async () => {
    const root = join(base, 'with-socket')
    await mkdir(root)
    await writeFile(join(root, 'a'), 'a')
    // a Unix socket cannot be opened for reading (ENXIO): the error comes from a worker
    const server: Server = createServer()
    await new Promise<void>(resolve => server.listen(join(root, 'sock'), resolve))
    try {
      await expect(describeTree(root)).rejects.toThrow(/ENXIO/)
      await expect(describeTreeInParallel(root)).rejects.toThrow(/ENXIO/)
    } finally {
      server.close()
    }
    await expect(describeTreeInParallel(join(base, 'no-such-dir'))).rejects.toThrow(/ENOENT/)
  })
})

describe('checkTreeMatches', () => {
  let want: Record<string, string>
  let n = 0

  /** v2: a directory, plain and executable files, a symlink, a subdirectory with its own mode. */
  const v2 = (): string => join(base, 'v2')
  /** A fresh exact copy of v2 (cp -a keeps modes and symlinks), then one change to it. */
  async function mirrorWith (change: (dir: string) => Promise<void>): Promise<string> {
    const dir = join(base, `mirror-${n++}`)
    execFileSync('cp', ['-a', v2(), dir])
    await change(dir)
    return dir
  }

  beforeAll(async () => {
    await mkdir(join(v2(), 'sub', 'deeper'), { recursive: true })
    await writeFile(join(v2(), 'a.txt'), 'alpha\n')
    await writeFile(join(v2(), 'sub', 'b.bin'), Buffer.alloc(1000, 7))
    await writeFile(join(v2(), 'sub', 'deeper', 'c'), 'gamma')
    await writeFile(join(v2(), 'run.sh'), '#!/bin/sh\n')
    await chmod(join(v2(), 'run.sh'), 0o755)
    await chmod(join(v2(), 'sub', 'deeper'), 0o750)
    await symlink('sub/b.bin', join(v2(), 'link'))
    want = await describeTreeInParallel(v2())
  })

  it('passes an exact copy', async () => {
    const dir = await mirrorWith(async () => {})
    expect(treeDifferences(want, await describeTreeInParallel(dir))).toStrictEqual([])
    await expect(checkTreeMatches('copy', dir, want, 'v2')).resolves.toBeUndefined()
  })

  const cases: Array<{ name: string, path: string, change: (dir: string) => Promise<void>, shows: RegExp }> = [
    { name: 'a file mode', path: 'run.sh', change: async d => { await chmod(join(d, 'run.sh'), 0o644) }, shows: /want file 755 10 [0-9a-f]{12}…, got file 644 10/ },
    { name: 'a directory mode', path: 'sub/deeper', change: async d => { await chmod(join(d, 'sub', 'deeper'), 0o755) }, shows: /want dir 750, got dir 755/ },
    { name: 'a size', path: 'sub/b.bin', change: async d => { await appendFile(join(d, 'sub', 'b.bin'), 'x') }, shows: /want file 644 1000 .*, got file 644 1001 / },
    {
      name: 'the content at the same size and mode',
      path: 'a.txt',
      change: async d => { await writeFile(join(d, 'a.txt'), 'ALPHA\n') },
      shows: /want file 644 6 [0-9a-f]{12}…, got file 644 6 [0-9a-f]{12}…/,
    },
    { name: 'a symlink target', path: 'link', change: async d => { await unlink(join(d, 'link')); await symlink('sub/deeper/c', join(d, 'link')) }, shows: /want link -> sub\/b\.bin, got link -> sub\/deeper\/c/ },
    { name: 'a missing entry', path: 'sub/deeper/c', change: async d => { await rm(join(d, 'sub', 'deeper', 'c')) }, shows: /sub\/deeper\/c \(missing\)/ },
    { name: 'an extra entry', path: 'sub/extra', change: async d => { await writeFile(join(d, 'sub', 'extra'), '') }, shows: /sub\/extra \(extra\)/ },
    { name: 'a type (file → symlink)', path: 'a.txt', change: async d => { await rm(join(d, 'a.txt')); await symlink('run.sh', join(d, 'a.txt')) }, shows: /want file 644 6 .*, got link -> run\.sh/ },
  ]
  for (const c of cases) {
    it(`reports ${c.name}`, async () => {
      const dir = await mirrorWith(c.change)
      expect(treeDifferences(want, await describeTreeInParallel(dir)).map(d => d.path)).toStrictEqual([c.path])
      const failure = checkTreeMatches('mirror', dir, want, 'v2')
      await expect(failure).rejects.toThrow(`mirror (${dir}) differs from v2 in 1 entries, e.g. ${c.path} (`)
      await expect(failure).rejects.toThrow(c.shows)
    })
  }

  it('counts every difference and lists the first few by path', async () => {
    const dir = await mirrorWith(async d => {
      await rm(join(d, 'sub'), { recursive: true })
      await writeFile(join(d, 'a.txt'), await readFile(join(d, 'run.sh')))
    })
    const diffs = treeDifferences(want, await describeTreeInParallel(dir))
    expect(diffs.map(d => d.path)).toStrictEqual(['a.txt', 'sub', 'sub/b.bin', 'sub/deeper', 'sub/deeper/c'])
    await expect(checkTreeMatches('mirror', dir, want, 'v2')).rejects.toThrow(/differs from v2 in 5 entries, e.g. a\.txt \(want .*\), sub \(missing\), sub\/b\.bin \(missing\), sub\/deeper \(missing\), sub\/deeper\/c \(missing\)$/)
  })
})
