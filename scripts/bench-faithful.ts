// Faithful trees at scale (issue 23): a tree of ~100,000 real system files — every file under 64 KiB in this
// machine's /usr/share and /usr/lib, with their symlinks, hardlinks, modes and systemd's `\x2d` names —
// published by one real agent and synced by another (separate processes, libp2p on 127.0.0.1, LevelDB). Ends
// with `diff -r --no-dereference` and `rsync -aHS --no-o --no-g --dry-run --itemize-changes` (owners are not
// replicated: the agent runs unprivileged) between source and mirror: both
// must be clean. The baseline, measured in the same run: `rsync -aH` of the same tree into an empty directory
// on the same disk (no network, no encryption: the floor of writing the files).
// Run: npm run build && npm run bench:faithful -- [--max-files 100000] [--keep]
import '../agent/polyfill.js'
import { spawnSync } from 'node:child_process'
import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Cluster, cliOk } from '../agent/demo/local-cluster.js'
import { api, AGENT_START_MS } from './bench/deltamesh.js'

const TREE = 'bench/faithful'
const SOURCES = ['/usr/share', '/usr/lib']

interface Options { maxFiles: number, keep: boolean }

function parseArgs (argv: string[]): Options {
  const o: Options = { maxFiles: 100_000, keep: false }
  for (let i = 0; i < argv.length; i++) {
    switch (argv[i]) {
      case '--max-files': o.maxFiles = Number(argv[++i]); break
      case '--keep': o.keep = true; break
      case '--help':
        console.log('options: --max-files N (default 100000: files taken from /usr/share and /usr/lib, under 64 KiB each) --keep (leave the temp dir)')
        process.exit(0)
        break
      default: throw new Error(`unknown option ${argv[i]}`)
    }
  }
  return o
}

/** Runs a command; stdout as bytes (names are bytes) and as text. */
function run (cmd: string, args: string[], input?: Buffer): { bytes: Buffer, stdout: string, seconds: number } {
  const t0 = performance.now()
  const r = spawnSync(cmd, args, { input, maxBuffer: 1 << 30 })
  if (r.error !== undefined) throw r.error
  // rsync's 23/24 (some files vanished or unreadable) are fine for building the corpus from a live /usr
  if (r.status !== 0 && !(cmd.endsWith('rsync') && (r.status === 23 || r.status === 24))) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr.toString('latin1').slice(-2000)}`)
  return { bytes: r.stdout, stdout: r.stdout.toString('latin1'), seconds: (performance.now() - t0) / 1000 }
}

function log (line: string): void { process.stdout.write(`${line}\n`) }

async function main (): Promise<void> {
  const o = parseArgs(process.argv.slice(2))
  if (spawnSync('sh', [new URL('../../scripts/setup-debian.sh', import.meta.url).pathname, 'rsync'], { stdio: 'inherit' }).status !== 0) throw new Error('rsync is needed')
  const dir = await mkdtemp(join(tmpdir(), 'dm-faithful-'))
  const cluster = await Cluster.create()
  try {
    const src = join(dir, 'src')
    // the corpus: the first maxFiles small files and symlinks of /usr (find order, half from each directory),
    // copied with rsync -aH so that names, hardlinks, modes and times are the system's own
    await mkdir(src, { mode: 0o755 })
    for (const base of SOURCES) {
      const listed = run('sh', ['-c', `cd ${base} && find . -xdev \\( -type f -size -64k -o -type l \\) -print0 2>/dev/null | head -z -n ${Math.ceil(o.maxFiles / SOURCES.length)}`]).bytes
      run('rsync', ['-aH', '--files-from=-', '--from0', `${base}/`, join(src, base.slice(1).replace('/', '-'))], listed)
    }
    const counted = run('sh', ['-c', `find ${src} -type f | wc -l; find ${src} -type l | wc -l; find ${src} -type f -links +1 | wc -l; du -sk ${src} | cut -f1`]).stdout.trim().split('\n').map(Number)
    log(`source: ${counted[0]} files, ${counted[1]} symlinks, ${counted[2]} with hardlinks, ${((counted[3] ?? 0) / 1024).toFixed(0)} MiB on disk`)
    const escaped = run('sh', ['-c', `find ${src} -name '*\\\\*' | wc -l`]).stdout.trim()
    log(`source: ${escaped} names with a backslash (systemd's \\x2d escapes)`)

    // baseline: rsync -aH into an empty directory
    const baseline = run('rsync', ['-aH', `${src}/`, join(dir, 'rsync-copy')])
    log(`baseline rsync -aH (local copy): ${baseline.seconds.toFixed(1)} s`)

    const origin = await cluster.addSite('origin')
    const lab = await cluster.addSite('lab')
    await cluster.wire(TREE, origin)
    for (const s of cluster.sites) await cluster.start(s, {}, [], AGENT_START_MS)
    const mirror = join(cluster.dir, 'lab-mirror')
    await cliOk(['subscribe', '--home', lab.home, TREE, '--to', mirror])
    const t0 = performance.now()
    const summary = await (await api(origin)).publish({ tree: TREE, source: src })
    const publishS = (performance.now() - t0) / 1000
    log(`deltamesh publish: ${publishS.toFixed(1)} s, ${summary.files} files, ${summary.hardlinks ?? 0} hardlinks, ${summary.skipped?.count ?? 0} entries skipped${summary.skipped !== undefined && summary.skipped.count > 0 ? ` (${summary.skipped.sample.map(s => s.path).join(', ')})` : ''}`)
    const t1 = performance.now()
    await (await api(lab)).waitForSync(TREE, { minSeq: summary.seq, signal: AbortSignal.timeout(3_600_000) })
    const syncS = (performance.now() - t1) / 1000
    log(`deltamesh sync (publish → mirror complete): ${syncS.toFixed(1)} s; publish + sync ${(publishS + syncS).toFixed(1)} s = ${((publishS + syncS) / baseline.seconds).toFixed(1)} × the local rsync copy`)

    const diff = spawnSync('diff', ['-r', '--no-dereference', src, `${mirror}/`], { encoding: 'latin1', maxBuffer: 1 << 30 })
    // owners and groups are not replicated (an agent runs unprivileged; a mirror's files are its user's, as
    // with rsync run by a mirror user), so rsync is asked about everything else
    const rsyncCheck = spawnSync('rsync', ['-aHS', '--no-o', '--no-g', '--dry-run', '--itemize-changes', `${src}/`, `${mirror}/`], { encoding: 'latin1', maxBuffer: 1 << 30 })
    const diffLines = diff.stdout.split('\n').filter(Boolean)
    const rsyncLines = rsyncCheck.stdout.split('\n').filter(Boolean)
    log(`diff -r: ${diffLines.length === 0 && diff.status === 0 ? 'clean' : `${diffLines.length} lines (exit ${diff.status})`}`)
    log(`rsync -aHS --no-o --no-g --itemize-changes: ${rsyncLines.length === 0 ? 'clean' : `${rsyncLines.length} lines`}`)
    for (const line of [...diffLines, ...rsyncLines].slice(0, 20)) log(`  ${line}`)
    const du = run('sh', ['-c', `du -sk ${src} | cut -f1; du -skL ${mirror} | cut -f1`]).stdout.trim().split('\n').map(Number)
    log(`du: source ${((du[0] ?? 0) / 1024).toFixed(0)} MiB, mirror ${((du[1] ?? 0) / 1024).toFixed(0)} MiB`)
    if (diffLines.length > 0 || diff.status !== 0 || rsyncLines.length > 0) { process.exitCode = 1; log('FAIL: the mirror differs from the source') } else log('PASS')
  } finally {
    await cluster.cleanup({ keepFiles: o.keep })
    if (!o.keep) await rm(dir, { recursive: true, force: true })
    else log(`kept ${dir} and ${cluster.dir}`)
  }
}

main().catch(err => { console.error(err); process.exit(1) })
