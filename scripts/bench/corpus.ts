// Deterministic corpora for `npm run bench`, built once and cached outside the repository
// ($DELTAMESH_BENCH_CACHE, else ~/.cache/deltamesh-bench/<scale>/). A corpus is two directories, v1 and v2,
// whose unchanged files are hardlinks of one inode (same mtime, like a mirror updated in place); a version is
// complete only when its `<name>.done` marker exists, so an interrupted build starts again cleanly.
import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { link, mkdir, readFile, readdir, rename, rm, stat, utimes, writeFile } from 'node:fs/promises'
import { homedir } from 'node:os'
import { dirname, join } from 'node:path'
import { prng, pseudoRandomBytes } from '../../agent/demo/tree-gen.js'
import { runOk } from './proc.js'
import { buildSrc } from './src-corpus.js'

export type Scale = 'full' | 'quick'

export interface Corpus {
  name: 'repo' | 'iso' | 'small' | 'src'
  v1: string
  v2: string
  /** One line: what v1 is and what changed in v2. */
  describe: string
}

const V1_TIME = new Date('2026-11-01T12:00:00Z')
const V2_TIME = new Date('2026-11-02T12:00:00Z')

export function cacheDir (scale: Scale): string {
  return join(process.env.DELTAMESH_BENCH_CACHE ?? join(homedir(), '.cache', 'deltamesh-bench'), scale)
}

const h32 = (s: string): number => createHash('sha256').update(s).digest().readUInt32BE(0)

async function done (dir: string): Promise<boolean> { return existsSync(`${dir}.done`) }
async function markDone (dir: string, info: string): Promise<void> { await writeFile(`${dir}.done`, info) }

// ---------------------------------------------------------------------------------------------------------
// repo: real .deb files from Debian (a fixed, version-pinned list), laid out like a pool, with a Packages index

interface Pkg { name: string, version: string, in: Set<'v1' | 'v2'>, size: number }

async function packageList (listFile: string, scale: Scale): Promise<Pkg[]> {
  const out: Pkg[] = []
  for (const line of (await readFile(listFile, 'utf8')).split('\n')) {
    if (line.startsWith('#') || line.trim() === '') continue
    const [name, version, ...rest] = line.split(' ')
    const size = Number(rest.pop())
    // quick scale: a fixed quarter of the packages (by name, so a package's versions stay together)
    if (scale === 'quick' && h32(`quick:${name as string}`) % 4 !== 0) continue
    out.push({ name: name as string, version: version as string, in: new Set(rest as Array<'v1' | 'v2'>), size })
  }
  return out
}

/** apt-get download writes NAME_VERSION_ARCH.deb with the epoch's ':' as '%3a'. */
function debName (files: string[], p: Pkg): string | undefined {
  const v = p.version.replace(/^\d+:/, '')
  return files.find(f => f.startsWith(`${p.name}_`) && (f.split('_')[1] === v || f.split('_')[1] === p.version.replace(':', '%3a')))
}

async function buildRepo (base: string, listFile: string, scale: Scale, log: (s: string) => void): Promise<Corpus> {
  const pool = join(base, 'debs')
  const v1 = join(base, 'repo-v1')
  const v2 = join(base, 'repo-v2')
  const pkgs = await packageList(listFile, scale)
  const describe = (): string => {
    const n1 = pkgs.filter(p => p.in.has('v1'))
    const both = new Set(pkgs.filter(p => p.in.has('v1') && p.in.has('v2')).map(p => p.name))
    const v1names = new Set(n1.map(p => p.name))
    const v2only = pkgs.filter(p => p.in.has('v2') && !p.in.has('v1'))
    const updated = v2only.filter(p => v1names.has(p.name)).length
    const added = v2only.length - updated
    const removed = n1.filter(p => !both.has(p.name) && !v2only.some(q => q.name === p.name)).length
    return `${n1.length} Debian bookworm .debs (${(n1.reduce((s, p) => s + p.size, 0) / 1e6).toFixed(0)} MB) + Packages.gz; v2: ${updated} packages at a newer version (bookworm-security/-updates), ${removed} removed, ${added} added, index regenerated`
  }
  if (await done(v1) && await done(v2)) return { name: 'repo', v1, v2, describe: describe() }
  await mkdir(pool, { recursive: true })
  let have = await readdir(pool)
  const missing = pkgs.filter(p => debName(have, p) === undefined)
  if (missing.length > 0) {
    log(`repo: apt-get download of ${missing.length} pinned packages into ${pool}`)
    for (let i = 0; i < missing.length; i += 100) await runOk('apt-get', ['download', ...missing.slice(i, i + 100).map(p => `${p.name}=${p.version}`)], { cwd: pool })
    have = await readdir(pool)
  }
  for (const p of pkgs) {
    const f = debName(have, p)
    if (f === undefined) throw new Error(`repo: ${p.name}=${p.version} was not downloaded`)
    const st = await stat(join(pool, f))
    if (st.size !== p.size) throw new Error(`repo: ${f} is ${st.size} bytes, the list says ${p.size}: the mirror serves another build; re-pin with scripts/bench/pick-packages.py`)
    await utimes(join(pool, f), V1_TIME, V1_TIME)
  }
  for (const [dir, which, time] of [[v1, 'v1', V1_TIME], [v2, 'v2', V2_TIME]] as const) {
    await rm(dir, { recursive: true, force: true })
    for (const p of pkgs.filter(q => q.in.has(which))) {
      const f = debName(have, p) as string
      const dest = join(dir, 'pool', 'main', p.name.startsWith('lib') ? p.name.slice(0, 4) : p.name[0] as string, p.name, f)
      await mkdir(dirname(dest), { recursive: true })
      await link(join(pool, f), dest)
    }
    const index = join(dir, 'dists', 'bookworm', 'main', 'binary-amd64')
    await mkdir(index, { recursive: true })
    const scan = await runOk('dpkg-scanpackages', ['--multiversion', 'pool'], { cwd: dir })
    await writeFile(join(index, 'Packages'), scan.stdout)
    await runOk('gzip', ['-9nk', join(index, 'Packages')])
    for (const f of ['Packages', 'Packages.gz']) await utimes(join(index, f), time, time)
    await markDone(dir, `${which}\n`)
  }
  return { name: 'repo', v1, v2, describe: describe() }
}

// ---------------------------------------------------------------------------------------------------------
// iso: one ISO-9660 image of each repo version (files at shifted offsets from one image to the next)

async function buildIso (base: string, repo: Corpus, log: (s: string) => void): Promise<Corpus> {
  const v1 = join(base, 'iso-v1')
  const v2 = join(base, 'iso-v2')
  for (const [dir, src, time] of [[v1, repo.v1, V1_TIME], [v2, repo.v2, V2_TIME]] as const) {
    if (await done(dir)) continue
    log(`iso: xorriso image of ${src}`)
    await rm(dir, { recursive: true, force: true })
    await mkdir(dir, { recursive: true })
    // SOURCE_DATE_EPOCH pins the volume dates and UUID: the same tree gives the same image
    await runOk('xorriso', ['-as', 'mkisofs', '-quiet', '-R', '-J', '-V', 'DELTAMESH_BENCH', '-o', join(dir, 'repo.iso'), src],
      { env: { SOURCE_DATE_EPOCH: String(Math.floor(time.getTime() / 1000)) } })
    await utimes(join(dir, 'repo.iso'), time, time)
    await markDone(dir, '')
  }
  return { name: 'iso', v1, v2, describe: 'repo.iso: an ISO-9660 image (xorriso, Rock Ridge + Joliet) of each repo version' }
}

// ---------------------------------------------------------------------------------------------------------
// small: many files of 0–8 KiB in a deep tree; v2 touches 1 % (the lsyncd case)

const PER_DIR = 50
/**
 * 20,000 took 17 min just to reach v1 on 5 subscribers on the shared 2 cores (each file is fsynced on
 * install, docs/benchmarks.md): --quick keeps the per-file figures with a count that fits the run.
 */
const QUICK_SMALL_FILES = 5_000
const MAX_SMALL = 8 * 1024

/** Five levels: 10 × 10 × 10 leaf directories under each top directory, PER_DIR files per leaf. */
function smallPath (i: number): string {
  const leaf = Math.floor(i / PER_DIR)
  return `t${Math.floor(leaf / 1000)}/a${Math.floor(leaf / 100) % 10}/b${Math.floor(leaf / 10) % 10}/c${leaf % 10}/f${i}.dat`
}

export async function buildSmall (base: string, files: number, log: (s: string) => void): Promise<Corpus> {
  const v1 = join(base, `small-${files}-v1`)
  const v2 = join(base, `small-${files}-v2`)
  const touched = Math.round(files / 100)
  const describe = `${files.toLocaleString('en')} files of 0–8 KiB in ${Math.ceil(files / PER_DIR)} leaf directories 5 levels deep; v2 touches 1 %: ${Math.round(touched * 0.8)} edited (a 64-byte patch), ${Math.round(touched * 0.1)} deleted, ${touched - Math.round(touched * 0.8) - Math.round(touched * 0.1)} added`
  if (await done(v1) && await done(v2)) return { name: 'small', v1, v2, describe }
  log(`small: writing ${files} files into ${v1}`)
  await rm(v1, { recursive: true, force: true })
  await rm(v2, { recursive: true, force: true })
  const rnd = prng('deltamesh-bench-small')
  // one deterministic pool; each file is a distinct slice of it (unique content, like real files)
  const pool = pseudoRandomBytes('deltamesh-bench-small-pool', 32 * 1024 * 1024)
  const made = new Set<string>()
  const write = async (rel: string, data: Uint8Array, time: Date, root: string): Promise<void> => {
    const path = join(root, rel)
    const d = dirname(path)
    if (!made.has(d)) { await mkdir(d, { recursive: true }); made.add(d) }
    await writeFile(path, data)
    await utimes(path, time, time)
  }
  const slice = (): Buffer => { const size = Math.floor(rnd() * (MAX_SMALL + 1)); const at = Math.floor(rnd() * (pool.length - size)); return pool.subarray(at, at + size) }
  for (let start = 0; start < files; start += 500) {
    const batch: Array<Promise<void>> = []
    for (let i = start; i < Math.min(files, start + 500); i++) batch.push(write(smallPath(i), slice(), V1_TIME, v1))
    await Promise.all(batch)
  }
  await markDone(v1, `${files}\n`)
  log(`small: v2 = hardlinks of v1, then 1 % touched`)
  await runOk('cp', ['-al', v1, v2])
  const picks = new Set<number>()
  while (picks.size < touched) picks.add(Math.floor(rnd() * files))
  const order = [...picks].sort((a, b) => a - b)
  for (const [k, i] of order.entries()) {
    const path = join(v2, smallPath(i))
    if (k % 10 === 0) { await rm(path); continue } // deleted
    if (k % 10 === 1) { await write(smallPath(files + k), slice(), V2_TIME, v2); continue } // added (new name)
    const data = Buffer.from(await readFile(path))
    const at = data.length === 0 ? 0 : Math.floor(rnd() * data.length)
    const patch = pseudoRandomBytes(`small-edit-${i}`, 64)
    const edited = Buffer.concat([data.subarray(0, at), patch, data.subarray(Math.min(data.length, at + 64))])
    // a new inode: writing through the hardlink would change v1 as well
    await writeFile(`${path}.tmp`, edited)
    await utimes(`${path}.tmp`, V2_TIME, V2_TIME)
    await rename(`${path}.tmp`, path)
  }
  await markDone(v2, '')
  return { name: 'small', v1, v2, describe }
}

/** `listFile`: repo-packages.txt; src-packages.txt sits next to it. */
export async function buildCorpora (scale: Scale, listFile: string, log: (s: string) => void, which: Set<string>): Promise<Corpus[]> {
  const base = cacheDir(scale)
  await mkdir(base, { recursive: true })
  const out: Corpus[] = []
  if (which.has('repo') || which.has('iso')) {
    const repo = await buildRepo(base, listFile, scale, log)
    if (which.has('repo')) out.push(repo)
    if (which.has('iso')) out.push(await buildIso(base, repo, log))
  }
  if (which.has('small')) out.push(await buildSmall(base, scale === 'full' ? 200_000 : QUICK_SMALL_FILES, log))
  // one size at both scales: ~55 MB and ~4,700 files is already a quick corpus
  if (which.has('src')) out.push({ name: 'src', ...await buildSrc(base, join(dirname(listFile), 'src-packages.txt'), log) })
  return out
}
