import { createCipheriv, createHash } from 'node:crypto'
import { chmod, mkdir, open, readdir, readFile, rename, rm, symlink, writeFile, lstat, readlink, utimes } from 'node:fs/promises'
import { dirname, join } from 'node:path'

// Deterministic sample trees for the demo, the end-to-end tests and the benchmarks: a package-repository
// shape (many small files, some large ones, nested directories, symlinks, an executable or two) and a
// "next version" mutation like a real compose update (some files edited, added, deleted, renamed, and a
// large image with bytes inserted in the middle). Same seed → same bytes, on every machine.

/** A fast deterministic byte stream: AES-256-CTR over zeros, keyed by the seed (incompressible like packages). */
export function pseudoRandomBytes (seed: string, length: number, offset = 0): Buffer {
  const key = createHash('sha256').update(seed).digest()
  const blockIndex = Math.floor(offset / 16)
  const iv = Buffer.alloc(16)
  iv.writeUInt32BE(Math.floor(blockIndex / 2 ** 32) >>> 0, 8)
  iv.writeUInt32BE(blockIndex >>> 0, 12)
  const cipher = createCipheriv('aes-256-ctr', key, iv)
  const skip = offset % 16
  return cipher.update(Buffer.alloc(length + skip)).subarray(skip)
}

/** Small deterministic PRNG (mulberry32) for shapes and choices. */
export function prng (seed: string): () => number {
  let a = createHash('sha256').update(seed).digest().readUInt32BE(0)
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export interface TreeSpec {
  seed: string
  files: number
  /** Total bytes of the large files (the 'images/' part). */
  largeBytes: number
  largeFiles: number
  /** Small files are 0..smallMax bytes. */
  smallMax: number
}

export const DEMO_TREE: TreeSpec = { seed: 'deltamesh-demo', files: 400, largeBytes: 48 * 1024 * 1024, largeFiles: 3, smallMax: 200 * 1024 }

const FIXED_MTIME = new Date('2026-11-01T12:00:00Z')

async function writeStreamed (path: string, seed: string, size: number): Promise<void> {
  await mkdir(dirname(path), { recursive: true })
  const handle = await open(path, 'w')
  try {
    const step = 4 * 1024 * 1024
    for (let offset = 0; offset < size; offset += step) {
      await handle.write(pseudoRandomBytes(seed, Math.min(step, size - offset), offset))
    }
  } finally {
    await handle.close()
  }
}

/** Writes a tree of `spec.files` small files in nested dirs, `spec.largeFiles` large ones and a few symlinks. */
export async function generateTree (root: string, spec: TreeSpec): Promise<void> {
  const rand = prng(spec.seed)
  await mkdir(root, { recursive: true })
  const arches = ['x86_64', 'aarch64', 'ppc64le', 's390x']
  for (let i = 0; i < spec.files; i++) {
    const arch = arches[i % arches.length] as string
    const letter = String.fromCharCode(97 + Math.floor(rand() * 26))
    const path = join(root, 'Packages', arch, letter, `pkg-${i}-1.${i % 7}.${arch}.rpm`)
    await mkdir(dirname(path), { recursive: true })
    const size = Math.floor(rand() ** 3 * spec.smallMax)
    await writeFile(path, pseudoRandomBytes(`${spec.seed}/file/${i}`, size))
  }
  for (let i = 0; i < spec.largeFiles; i++) {
    await writeStreamed(join(root, 'images', `disk-${i}.img`), `${spec.seed}/large/${i}`, Math.floor(spec.largeBytes / spec.largeFiles))
  }
  await mkdir(join(root, 'repodata'), { recursive: true })
  await writeFile(join(root, 'repodata', 'repomd.xml'), `<repomd seed="${spec.seed}" files="${spec.files}"/>\n`)
  await writeFile(join(root, 'install.sh'), '#!/bin/sh\necho installing\n')
  await chmod(join(root, 'install.sh'), 0o755)
  await symlink('images/disk-0.img', join(root, 'latest.img'))
  await symlink('../x86_64', join(root, 'Packages', 'aarch64', 'x86_64-link'))
  await setMtimes(root)
}

export interface MutationReport { changed: number, added: number, deleted: number, renamed: number, insertedBytes: number }

/**
 * Turns a generated tree into its "next version": ~`fraction` of small files rewritten in part, a few
 * added, deleted and renamed, `insertBytes` inserted in the middle of the first large file, index updated.
 */
export async function mutateTree (root: string, seed: string, fraction = 0.05, insertBytes = 100_000): Promise<MutationReport> {
  const rand = prng(`${seed}/mutate`)
  const files = (await listFiles(root)).filter(p => p.startsWith('Packages/'))
  const report: MutationReport = { changed: 0, added: 0, deleted: 0, renamed: 0, insertedBytes: insertBytes }
  for (const rel of files) {
    const r = rand()
    const path = join(root, rel)
    if (r < fraction) {
      const data = await readFile(path)
      const at = Math.floor(rand() * data.length)
      const patch = pseudoRandomBytes(`${seed}/patch/${rel}`, Math.min(4096, data.length - at))
      patch.copy(data, at)
      await writeFile(path, data)
      report.changed++
    } else if (r < fraction + 0.01) {
      await rm(path)
      report.deleted++
    } else if (r < fraction + 0.02) {
      await rename(path, path.replace(/\.rpm$/, '.renamed.rpm'))
      report.renamed++
    }
  }
  for (let i = 0; i < Math.max(1, Math.floor(files.length * 0.01)); i++) {
    await writeFile(join(root, 'Packages', 'x86_64', `new-${seed}-${i}.rpm`), pseudoRandomBytes(`${seed}/new/${i}`, 20_000 + i * 1000))
    report.added++
  }
  const image = join(root, 'images', 'disk-0.img')
  if (insertBytes > 0 && await lstat(image).then(() => true, () => false)) {
    const data = await readFile(image)
    const middle = Math.floor(data.length / 2)
    await writeFile(image, Buffer.concat([data.subarray(0, middle), pseudoRandomBytes(`${seed}/insert`, insertBytes), data.subarray(middle)]))
  }
  await writeFile(join(root, 'repodata', 'repomd.xml'), `<repomd seed="${seed}" mutated="true"/>\n`)
  await setMtimes(root)
  return report
}

/**
 * Fixed mtimes make two generated trees comparable and the manifest reproducible. Only files without it
 * (new or rewritten ones) are stamped: utimes changes a file's ctime, and a tree whose producer touched every
 * file — which no compose or package repository does — makes a publisher re-read all of them to see that
 * nothing changed (a ctime change is verified, not trusted), while rsync's quick check ignores ctime.
 */
async function setMtimes (root: string): Promise<void> {
  for (const rel of await listFiles(root)) {
    const path = join(root, rel)
    if ((await lstat(path)).mtimeMs !== FIXED_MTIME.getTime()) await utimes(path, FIXED_MTIME, FIXED_MTIME)
  }
}

/** Regular files under root (relative paths, sorted). Symlinks are not followed. */
export async function listFiles (root: string, dir = ''): Promise<string[]> {
  const out: string[] = []
  for (const entry of await readdir(join(root, dir), { withFileTypes: true })) {
    const rel = dir === '' ? entry.name : `${dir}/${entry.name}`
    if (entry.isDirectory()) out.push(...await listFiles(root, rel))
    else if (entry.isFile()) out.push(rel)
  }
  return out.sort()
}

/**
 * Describes a tree for comparison: every entry's type, permission bits, size, SHA-256 of contents,
 * symlink target. Two trees are identical iff their descriptions are equal.
 */
export async function describeTree (root: string, dir = ''): Promise<Record<string, string>> {
  const out: Record<string, string> = {}
  for (const entry of (await readdir(join(root, dir), { withFileTypes: true })).sort((a, b) => a.name < b.name ? -1 : 1)) {
    const rel = dir === '' ? entry.name : `${dir}/${entry.name}`
    const abs = join(root, rel)
    const st = await lstat(abs)
    const mode = (st.mode & 0o7777).toString(8)
    if (st.isSymbolicLink()) out[rel] = `link -> ${await readlink(abs)}`
    else if (st.isDirectory()) { out[rel] = `dir ${mode}`; Object.assign(out, await describeTree(root, rel)) } else out[rel] = `file ${mode} ${st.size} ${createHash('sha256').update(await readFile(abs)).digest('hex')}`
  }
  return out
}
