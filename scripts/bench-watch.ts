// What watching a source for `publish --watch` / [[publish]] watch = true costs: a tree of N empty files (100
// per directory, 50 directories per parent) is made in a temp dir, then a watcher is started on it and this
// process's CPU time, RSS and inotify watches are read: after start-up, over an idle period, and after a burst
// of new files in one existing directory. `--node-recursive` measures fs.watch(root, { recursive: true }) instead
// (one inotify watch per file on Linux: keep --files well under fs.inotify.max_user_watches).
//
// Run: npm run build && node dist/scripts/bench-watch.js [--files 200000] [--idle 20] [--burst 1000] [--node-recursive] [--keep]
import '../agent/polyfill.js'
import { mkdirSync, readdirSync, readFileSync, watch, writeFileSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { spawnSync } from 'node:child_process'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { TreeWatcher } from '../agent/publish/tree-watcher.js'

interface Options { files: number, idleS: number, burst: number, nodeRecursive: boolean, keep: boolean }

function parseArgs (argv: string[]): Options {
  const o: Options = { files: 200_000, idleS: 20, burst: 1000, nodeRecursive: false, keep: false }
  for (let i = 0; i < argv.length; i++) {
    const value = (): number => Number(argv[++i])
    switch (argv[i]) {
      case '--files': o.files = value(); break
      case '--idle': o.idleS = value(); break
      case '--burst': o.burst = value(); break
      case '--node-recursive': o.nodeRecursive = true; break
      case '--keep': o.keep = true; break
      default: throw new Error(`unknown option ${argv[i]}`)
    }
  }
  return o
}

function makeTree (root: string, files: number): number {
  let dirs = 0
  for (let made = 0; made < files; dirs++) {
    const dir = join(root, `d${Math.floor(dirs / 50)}`, `e${dirs}`)
    mkdirSync(dir, { recursive: true })
    for (let f = 0; f < 100 && made < files; f++, made++) writeFileSync(join(dir, `f${f}`), '')
  }
  return dirs + Math.ceil(dirs / 50) + 1
}

function inotifyWatches (): number {
  let n = 0
  for (const fd of readdirSync('/proc/self/fdinfo')) {
    try { n += (readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8').match(/^inotify /mg) ?? []).length } catch { /* closed meanwhile */ }
  }
  return n
}

const cpuS = (since: NodeJS.CpuUsage): number => { const u = process.cpuUsage(since); return (u.user + u.system) / 1e6 }
const rssMiB = (): number => process.memoryUsage().rss / 1048576
const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

async function main (): Promise<void> {
  const o = parseArgs(process.argv.slice(2))
  const root = await mkdtemp(join(tmpdir(), 'deltamesh-bench-watch-'))
  try {
    const dirs = makeTree(root, o.files)
    const rss0 = rssMiB()
    let events = 0
    const cpu0 = process.cpuUsage()
    const t0 = Date.now()
    let close: () => void
    if (o.nodeRecursive) {
      const w = watch(root, { recursive: true }, () => { events++ })
      w.on('error', err => { console.error(`fs.watch recursive: ${err.message}`); process.exitCode = 1 })
      close = () => w.close()
      await sleep(2000) // Node's recursive watcher adds its watches asynchronously
    } else {
      const w = new TreeWatcher(root, { onChange: () => { events++ }, onError: err => console.error(`watcher: ${err.message}`) })
      await w.start()
      close = () => w.close()
    }
    const startMs = Date.now() - t0
    const start = { cpuS: cpuS(cpu0), rssMiB: rssMiB(), watches: inotifyWatches() }
    const cpu1 = process.cpuUsage()
    await sleep(o.idleS * 1000)
    const idle = { cpuS: cpuS(cpu1), events }
    events = 0
    const cpu2 = process.cpuUsage()
    const t2 = Date.now()
    // into a directory that exists (new packages in Packages/), by another process: the CPU read here is the watcher's
    const writer = `const fs = require('fs'); for (let i = 0; i < ${o.burst}; i++) fs.writeFileSync(${JSON.stringify(join(root, 'd0', 'e0'))} + '/n' + i, 'x')`
    spawnSync(process.execPath, ['-e', writer], { stdio: 'inherit' })
    const writeMs = Date.now() - t2
    await sleep(2000)
    const burst = { cpuS: cpuS(cpu2), events, rssMiB: rssMiB() }
    close()
    console.log(JSON.stringify({
      node: process.version, watcher: o.nodeRecursive ? 'fs.watch recursive' : 'TreeWatcher (one watch per directory)',
      files: o.files, dirs, rssBeforeMiB: Math.round(rss0), start: { ms: startMs, cpuS: +start.cpuS.toFixed(2), rssMiB: Math.round(start.rssMiB), inotifyWatches: start.watches },
      idle: { seconds: o.idleS, cpuS: +idle.cpuS.toFixed(3), events: idle.events },
      burst: { files: o.burst, writeMs, cpuS: +burst.cpuS.toFixed(3), events: burst.events, rssMiB: Math.round(burst.rssMiB) },
    }, null, 1))
  } finally {
    if (!o.keep) await rm(root, { recursive: true, force: true })
  }
}

main().catch(err => { console.error(err); process.exit(1) })
