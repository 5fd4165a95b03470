// The source-tree corpus of `npm run bench`: one C project's upstream release tarball at two nearby versions
// (scripts/bench/src-packages.txt pins them with size and SHA-256), fetched from Debian's source archive —
// what a fresh Debian machine reaches without GitHub — and unpacked as a checkout per tag would be: every
// file keeps the tarball's mode and mtime, nothing is shared between v1 and v2 (a release tarball stamps
// every file with the release time, so unchanged files differ in mtime too, as between two checkouts).
//
// The machine's sources.list is left alone: a private apt configuration (its own deb-src list, lists and
// cache directories under the corpus cache) is updated once and asked for each pinned version's URIs;
// apt-helper downloads the tarball and checks it against the hash the signed Sources index gave.
import { createHash } from 'node:crypto'
import { createReadStream, existsSync } from 'node:fs'
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { runOk } from './proc.js'

/** The two halves of the corpus, as the pin list gives them. */
export interface SrcPin { source: string, version: string, which: 'v1' | 'v2', file: string, size: number, sha256: string }

export async function readSrcPins (listFile: string): Promise<SrcPin[]> {
  const pins: SrcPin[] = []
  for (const line of (await readFile(listFile, 'utf8')).split('\n')) {
    if (line.startsWith('#') || line.trim() === '') continue
    const [source, version, which, file, size, sha256] = line.trim().split(/\s+/)
    if (sha256 === undefined || (which !== 'v1' && which !== 'v2')) throw new Error(`${listFile}: bad line "${line}"`)
    pins.push({ source: source as string, version: version as string, which, file: file as string, size: Number(size), sha256 })
  }
  if (!pins.some(p => p.which === 'v1') || !pins.some(p => p.which === 'v2')) throw new Error(`${listFile}: needs one v1 and one v2 line`)
  return pins
}

/** Debian's archive and its security archive; DELTAMESH_BENCH_DEBIAN_MIRROR / _SECURITY_MIRROR point elsewhere. */
function sourcesList (): string {
  const main = process.env.DELTAMESH_BENCH_DEBIAN_MIRROR ?? 'http://deb.debian.org/debian'
  const security = process.env.DELTAMESH_BENCH_DEBIAN_SECURITY_MIRROR ?? 'http://deb.debian.org/debian-security'
  return [
    `deb-src ${main} bookworm main`,
    `deb-src ${main} bookworm-updates main`,
    `deb-src ${security} bookworm-security main`,
    '',
  ].join('\n')
}

/** apt options that read and write only under `dir` (sources, lists, caches), never the machine's. */
async function privateApt (dir: string): Promise<string[]> {
  for (const d of ['lists/partial', 'cache/archives/partial', 'parts']) await mkdir(join(dir, d), { recursive: true })
  await writeFile(join(dir, 'sources.list'), sourcesList())
  return [
    '-o', `Dir::Etc::SourceList=${join(dir, 'sources.list')}`,
    '-o', `Dir::Etc::SourceParts=${join(dir, 'parts')}`,
    '-o', `Dir::State::Lists=${join(dir, 'lists')}`,
    '-o', `Dir::Cache=${join(dir, 'cache')}`,
    // the lock files are ours alone; a running apt on the machine must not block (or be blocked by) this
    '-o', 'Debug::NoLocking=1',
  ]
}

async function sha256File (path: string): Promise<string> {
  const h = createHash('sha256')
  for await (const b of createReadStream(path)) h.update(b as Buffer)
  return h.digest('hex')
}

/** Downloads the pinned tarballs into `dir` (those not already there, right size and hash). */
async function fetchTarballs (pins: SrcPin[], dir: string, aptDir: string, log: (s: string) => void): Promise<void> {
  const ok = async (p: SrcPin): Promise<boolean> => existsSync(join(dir, p.file)) && (await stat(join(dir, p.file))).size === p.size && await sha256File(join(dir, p.file)) === p.sha256
  const missing: SrcPin[] = []
  for (const p of pins) if (!await ok(p)) missing.push(p)
  if (missing.length === 0) return
  await mkdir(dir, { recursive: true })
  const apt = await privateApt(aptDir)
  log(`src: apt-get update of a private deb-src list (${aptDir})`)
  await runOk('apt-get', [...apt, 'update'])
  for (const p of missing) {
    // `apt-get source --download-only` would also want the .dsc and Debian's packaging; the tarball is enough
    const uris = (await runOk('apt-get', [...apt, 'source', '--print-uris', `${p.source}=${p.version}`], { cwd: dir })).stdout
    const line = uris.split('\n').find(l => l.split(' ')[1] === p.file)
    if (line === undefined) throw new Error(`src: the mirror has no ${p.file} for ${p.source}=${p.version} (no longer carried? re-pin ${p.source} in src-packages.txt)`)
    const [quoted, , size, hash] = line.split(' ') as [string, string, string, string]
    if (Number(size) !== p.size || hash !== `SHA256:${p.sha256}`) throw new Error(`src: the mirror's ${p.file} is ${size} bytes, ${hash}; the pin says ${p.size}, SHA256:${p.sha256}`)
    log(`src: downloading ${p.file} (${(p.size / 1e6).toFixed(1)} MB)`)
    await runOk('/usr/lib/apt/apt-helper', ['download-file', quoted.slice(1, -1), join(dir, `${p.file}.part`), `SHA256:${p.sha256}`])
    await rename(join(dir, `${p.file}.part`), join(dir, p.file))
    if (!await ok(p)) throw new Error(`src: ${p.file} does not match its pin after download`)
  }
}

/**
 * Unpacks a release tarball into `dest`: modes and mtimes as the tarball has them (directories too), no
 * owner from the tarball, the single top directory (`openssl-3.0.20/`) becoming `dest` itself.
 */
async function unpack (tarball: string, dest: string): Promise<void> {
  const tmp = `${dest}.unpack`
  await rm(tmp, { recursive: true, force: true })
  await rm(dest, { recursive: true, force: true })
  await mkdir(tmp)
  await runOk('tar', ['-x', '--no-same-owner', '--same-permissions', '-f', tarball, '-C', tmp])
  const top = await readdir(tmp)
  if (top.length !== 1) throw new Error(`src: ${tarball} holds ${top.length} top-level entries, expected one directory`)
  // renaming the directory keeps the mtime tar gave it
  await rename(join(tmp, top[0] as string), dest)
  await rm(tmp, { recursive: true })
}

export interface SrcCorpus { v1: string, v2: string, describe: string }

export async function buildSrc (base: string, listFile: string, log: (s: string) => void): Promise<SrcCorpus> {
  const pins = await readSrcPins(listFile)
  const p1 = pins.find(p => p.which === 'v1') as SrcPin
  const p2 = pins.find(p => p.which === 'v2') as SrcPin
  const v1 = join(base, 'src-v1')
  const v2 = join(base, 'src-v2')
  const describe = `${p1.source} upstream source, release tarballs from Debian's source archive: v1 ${p1.file} (${p1.version}), v2 ${p2.file} (${p2.version}), each unpacked afresh (every file has its tarball's mtime: all differ between versions)`
  const tarballs = join(base, 'src-tarballs')
  for (const [dir, pin] of [[v1, p1], [v2, p2]] as const) {
    const marker = `${pin.file} ${pin.sha256}\n`
    if (existsSync(`${dir}.done`) && await readFile(`${dir}.done`, 'utf8') === marker) continue
    await fetchTarballs(pins, tarballs, join(base, 'src-apt'), log)
    log(`src: unpacking ${pin.file} into ${dir}`)
    await rm(`${dir}.done`, { force: true })
    await unpack(join(tarballs, pin.file), dir)
    await writeFile(`${dir}.done`, marker)
  }
  return { v1, v2, describe }
}
