import { mkdir, stat } from 'node:fs/promises'
import { resolve } from 'node:path'
import { availableParallelism } from 'node:os'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { toHex } from '../../protocol/chunk-id.js'
import { ManifestWriter, encodeRoot, type ChunkingParams, type ManifestEntry } from '../../protocol/manifest.js'
import { chunkIdOf } from '../../protocol/chunk-id.js'
import { displayPath } from '../../protocol/paths.js'
import type { VerifySummary } from '../api/api.js'
import type { Command } from 'commander'
import { resolveHome } from '../core/home.js'
import { ConfigError, loadConfig, writeDefaultConfig } from '../core/config.js'
import { createPublisherKey, loadPublisherKey, publisherKeyText } from '../core/identity.js'
import { loadOrCreatePeerKey } from '../net/peer-key.js'
import { ExitError, formatBytes, homeOption, parseSeq, withLocalContext } from './common.js'
import { viaAgent } from './common.js'
import { isUnspecified } from '../net/peer-address.js'
import { printPublish, publishOnce, type PublishCliOptions } from './publish-once.js'

const DEFAULT_LISTEN = '/ip4/0.0.0.0/tcp/4101'

/** What `init` prints, so sites can be wired together by copy-paste. */
/**
 * What other sites need of this one. Only dialable addresses: a listen address of 0.0.0.0 or :: ("every
 * interface") is no address to dial, so it is left out, and `init` says to announce one.
 */
export async function describeSite (homeArg: string | undefined): Promise<{ peerId: string, multiaddrs: string[], publisherKey: string, dialOutOnly: boolean }> {
  const home = resolveHome(homeArg)
  const config = await loadConfig(home.config)
  const peerId = peerIdFromPrivateKey(await loadOrCreatePeerKey(home.peerKey)).toString()
  const addrs = (config.agent.announce.length > 0 ? config.agent.announce : config.agent.listen).filter(a => !isUnspecified(a))
  const dialOutOnly = config.agent.listen.length === 0
  return { peerId, multiaddrs: addrs.map(a => `${a}/p2p/${peerId}`), publisherKey: publisherKeyText(await loadPublisherKey(home.publisherKey)), dialOutOnly }
}

/** What `init` says instead of an address: a dial-out-only site is listed by its peer id; 0.0.0.0 needs an announce. */
function noAddressNote (site: { peerId: string, dialOutOnly: boolean }): string {
  if (site.dialOutOnly) return `multiaddr:      none: this site only dials out (listen = []); the sites it dials list it with: deltamesh peers add --home DIR /p2p/${site.peerId}\n`
  return 'multiaddr:      none to give: this site listens on every interface (0.0.0.0 or ::); run `deltamesh init --announce /ip4/<this host\'s address>/tcp/<port>` on a new home, or set [agent] announce in config.toml\n'
}

// One function per command; `deltamesh --help` lists them in this order.
export function registerLocalCommands (program: Command): void {
  registerInit(program)
  registerPublish(program)
  registerManifest(program)
  registerVerify(program)
}

function registerInit (program: Command): void {
  program.command('init')
    .description('create an agent home: peer identity, publisher key and a commented config file; print what other sites need')
    .addOption(homeOption())
    .option('--listen <multiaddr...>', `libp2p listen address(es) (default: ${DEFAULT_LISTEN})`)
    .option('--no-listen', 'listen on nothing: this site only dials out (a build server behind a firewall); the sites it dials list it as /p2p/<peer id>')
    .option('--announce <multiaddr...>', 'address(es) other sites should dial, e.g. /ip4/192.0.2.7/tcp/4101 (needed when listening on 0.0.0.0 or ::)')
    .option('--name <site>', 'this site\'s name on every dashboard ([agent] name; default: the host name)')
    .option('--dashboard <host:port>', 'where the dashboard and /metrics listen (default 127.0.0.1:7180; several agents on one host each need their own port)')
    .option('--json', 'print {"peerId","multiaddrs","publisherKey"} as JSON')
    .action(async (opts: { home?: string, listen?: string[] | false, announce?: string[], dashboard?: string, name?: string, json?: boolean }) => {
      const home = resolveHome(opts.home)
      const listen = opts.listen === false ? [] : opts.listen
      for (const a of opts.announce ?? []) if (isUnspecified(a)) throw new ExitError(`--announce ${a}: an unspecified address (0.0.0.0 or ::) cannot be dialled; give this site's real address`, 2)
      await mkdir(home.root, { recursive: true, mode: 0o700 })
      const exists = await stat(home.config).then(() => true, () => false)
      if (!exists) await writeInitialConfig(home.config, { ...opts, listen })
      else if (listen !== undefined || opts.announce !== undefined || opts.dashboard !== undefined || opts.name !== undefined) throw new Error(`${home.config} already exists; edit its [agent] listen and announce, or [dashboard] listen, instead of passing --listen, --no-listen, --announce or --dashboard`)
      await loadConfig(home.config)
      await loadOrCreatePeerKey(home.peerKey)
      if (!(await stat(home.publisherKey).then(() => true, () => false))) await createPublisherKey(home.publisherKey)
      const site = await describeSite(opts.home)
      if (opts.json === true) {
        process.stdout.write(JSON.stringify({ peerId: site.peerId, multiaddrs: site.multiaddrs, publisherKey: site.publisherKey }) + '\n')
      } else {
        process.stdout.write(`${exists ? 'Home already initialised' : 'Initialised'} ${home.root}\n` +
          `peer id:        ${site.peerId}\n` +
          site.multiaddrs.map(a => `multiaddr:      ${a}\n`).join('') +
          (site.multiaddrs.length === 0 ? noAddressNote(site) : '') +
          `publisher key:  ${site.publisherKey}\n\n` +
          'On another site:  deltamesh peers add --home DIR <multiaddr>   and   deltamesh trust --home DIR TREE <publisher key>\n')
      }
    })
}

/** config.toml from init's options; a bad option is the command line's error, named as such. */
async function writeInitialConfig (file: string, opts: { listen?: string[], announce?: string[], dashboard?: string, name?: string }): Promise<void> {
  try {
    await writeDefaultConfig(file, opts.listen ?? [DEFAULT_LISTEN], opts.announce ?? [], opts.dashboard, opts.name)
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err
    const option = err.key.startsWith('dashboard') ? '--dashboard' : err.key === 'agent.name' ? '--name' : err.key.includes('announce') ? '--announce' : '--listen'
    throw new ExitError(`${option}: ${err.expected.replace(/^expected /, '')}`, 2)
  }
}

function registerPublish (program: Command): void {
  program.command('publish')
    .description('scan SRC, chunk and hash what changed, sign and record a new version of TREE (announced to peers when the agent runs); with --watch, again whenever SRC changes')
    .addOption(homeOption())
    .argument('<tree>', 'tree name, e.g. rhel-10/compose/BaseOS')
    .argument('<src>', 'directory to publish')
    .option('--label <label>', 'version label, e.g. a compose id; with --watch a template: {date} (UTC YYYYMMDD), {time} (UTC HHMMSS), {seq}')
    .option('--strict', 'fail, publishing nothing, if any entry of SRC cannot be published (FIFOs, sockets, devices, unreadable files)')
    .option('--force', 'publish a new version even when SRC is identical to the newest one')
    .option('--json', 'print the result as JSON (with --watch: one line per publish)')
    .option('--watch', 'keep running: publish SRC now, then whenever it has been quiet for --quiet after a change (or --max-delay after the first change); stop with Ctrl-C')
    .option('--quiet <duration>', 'with --watch: publish once nothing changed for this long', '5s')
    .option('--max-delay <duration>', 'with --watch: publish at the latest this long after the first unpublished change', '5m')
    .action(async (tree: string, src: string, opts: PublishCliOptions) => {
      if (opts.watch === true) {
        const { runPublishWatch } = await import('./publish-watch.js')
        await runPublishWatch(opts.home, tree, resolve(src), opts)
        return
      }
      printPublish(await publishOnce(opts.home, { tree, source: resolve(src), label: opts.label, strict: opts.strict === true, force: opts.force === true }), opts.json === true)
    })
}

function registerManifest (program: Command): void {
  program.command('manifest')
    .description('compute and print the manifest of a directory (stats, or entries as JSON lines) without an agent home')
    .argument('<src>', 'directory')
    .option('--json', 'print stats as JSON')
    .option('--entries', 'print every entry as a JSON line')
    .option('--chunk-size <size>', 'average chunk size: 16KiB, 32KiB, 52KiB (default) or 64KiB, as [chunking] in config.toml')
    .action(async (src: string, opts: { json?: boolean, entries?: boolean, chunkSize?: string }) => {
      const { CHUNK_SIZES, CHUNK_SIZE_NAMES } = await import('../../protocol/chunking.js')
      const size = opts.chunkSize ?? '52KiB'
      if (!(CHUNK_SIZE_NAMES as string[]).includes(size)) throw new Error(`--chunk-size: one of ${CHUNK_SIZE_NAMES.join(', ')}`)
      const chunking = CHUNK_SIZES[size as keyof typeof CHUNK_SIZES]
      const stats = await computeManifest(src, chunking, entry => {
        if (opts.entries === true) process.stdout.write(entryLine(entry))
      })
      if (opts.entries === true) return
      if (opts.json === true) process.stdout.write(JSON.stringify(stats) + '\n')
      else printManifestStats(src, stats)
    })
}

/** What `deltamesh manifest` reports of a directory: what a publish of it would record. */
interface ManifestStats {
  dirs: number
  files: number
  symlinks: number
  bytes: number
  chunks: number
  skipped: number
  uniqueChunks: number
  uniqueBytes: number
  manifestBytes: number
  manifestChunks: number
  root: string
  chunking: ChunkingParams
  ms: number
}

/**
 * Scans and chunks SRC as a publish would, without an agent home or a store, and builds its manifest and
 * root. Each entry goes to onEntry as it is written (so --entries streams); skipped entries are named on stderr.
 */
async function computeManifest (src: string, chunking: ChunkingParams, onEntry: (entry: ManifestEntry) => void): Promise<ManifestStats> {
  // loaded here, not at the top: the other commands start faster
  const { ChunkerPool } = await import('../chunk/pool.js')
  const { chunkBytes } = await import('../chunk/chunker.js')
  const { scanTree, sourceHeader } = await import('../scan/scanner.js')
  const { realpath } = await import('node:fs/promises')
  const pool = new ChunkerPool({ size: availableParallelism() })
  const started = Date.now()
  try {
    // the same header as a publish of this directory, so that the root printed is the one it would sign
    const writer = new ManifestWriter(await sourceHeader(await realpath(src), chunking))
    const parts = [writer.start()]
    const unique = new Map<string, number>()
    const counts = { dirs: 0, files: 0, symlinks: 0, bytes: 0, chunks: 0 }
    let skipped = 0
    const onSkip = (p: string, _kind: string, reason: string): void => { skipped++; process.stderr.write(`not in the manifest: ${displayPath(p)}: ${reason}\n`) }
    for await (const { entry } of scanTree(src, { chunkFile: async (p, s, size, options) => await pool.chunkFile(p, chunking, s, size, options), onSkip })) {
      parts.push(writer.write(entry))
      if (entry.type === 'dir') counts.dirs++
      else if (entry.type === 'symlink') counts.symlinks++
      else {
        counts.files++; counts.bytes += entry.size; counts.chunks += entry.chunks.length
        for (const c of entry.chunks) unique.set(toHex(c.id), c.size)
      }
      onEntry(entry)
    }
    const manifest = Buffer.concat(parts)
    const chunks = chunkBytes(manifest, chunking)
    const root = encodeRoot({ manifestSize: manifest.byteLength, entryCount: writer.entryCount, totalFileBytes: writer.totalFileBytes, chunks: chunks.map(c => ({ id: c.id, size: c.size })) })
    const uniqueBytes = [...unique.values()].reduce((a, b) => a + b, 0)
    return { ...counts, skipped, uniqueChunks: unique.size, uniqueBytes, manifestBytes: manifest.byteLength, manifestChunks: chunks.length, root: toHex(chunkIdOf(root)), chunking: chunking, ms: Date.now() - started }
  } finally {
    await pool.close()
  }
}

/** One entry as a JSON line, its names in their display form (backslash, control characters and non-UTF-8 bytes escaped). */
function entryLine (entry: ManifestEntry): string {
  const shown = { ...entry, path: displayPath(entry.path) }
  if (shown.type === 'symlink') shown.target = displayPath(shown.target)
  const printable = shown.type === 'file' ? { ...shown, ...(shown.linkTo === undefined ? {} : { linkTo: displayPath(shown.linkTo) }), chunks: shown.chunks.map(c => [toHex(c.id), c.size]) } : shown
  return JSON.stringify(printable) + '\n'
}

function printManifestStats (src: string, stats: ManifestStats): void {
  const { chunking, skipped } = stats
  process.stdout.write(`${src}: ${stats.files} files, ${stats.dirs} dirs, ${stats.symlinks} symlinks, ${formatBytes(stats.bytes)}\n` +
    `chunks: ${stats.chunks} (${stats.uniqueChunks} unique, ${formatBytes(stats.uniqueBytes)}), average ${formatBytes(stats.chunks === 0 ? 0 : Math.round(stats.bytes / stats.chunks))}\n` +
    `manifest: ${formatBytes(stats.manifestBytes)} in ${stats.manifestChunks} chunks, root ${stats.root}\n` +
    `chunking: ${chunking.algorithm} avgBits=${chunking.avgBits} min=${chunking.minSize} max=${chunking.maxSize}; ${stats.ms} ms\n` +
    (skipped > 0 ? `NOT in the manifest: ${skipped} entr${skipped === 1 ? 'y' : 'ies'} (listed above)\n` : ''))
}

function registerVerify (program: Command): void {
  program.command('verify')
    .description('re-hash a held version of TREE against its signed manifest (exit 2 when anything differs)')
    .addOption(homeOption())
    .argument('<tree>', 'tree name')
    .option('--seq <n>', 'version to verify (default: current)', parseSeq)
    .option('--repair', 'rebuild what differs from the manifest (from chunks on this disk, or asked of peers when the agent runs), then verify again; other versions sharing a damaged file (hardlinks) are repaired with it')
    .option('--json', 'print the result as JSON')
    .action(async (tree: string, opts: { home?: string, seq?: number, json?: boolean, repair?: boolean }) => {
      const { verifyTree } = await import('../daemon/verify-repair.js')
      const options = { seq: opts.seq, repair: opts.repair === true }
      const result = (await viaAgent(opts.home, async api => await api.verify(tree, options))) ??
        await withLocalContext(opts.home, async ctx => await verifyTree({ catalog: ctx.store.catalog, index: ctx.store.index }, tree, options))
      if (opts.json === true) process.stdout.write(JSON.stringify(result) + '\n')
      else printVerify(tree, result)
      if (result.problems.length > 0) throw new ExitError(`${tree}@${result.seq}: ${new Set(result.problems.map(p => p.path)).size} file(s) differ from the manifest`, 2)
    })
}

function printVerify (tree: string, result: VerifySummary): void {
  const r = result.repair
  if (r !== undefined) {
    process.stdout.write(`${tree}@${result.seq}: ${r.problemsBefore.length} problem(s) found; repaired ${r.repaired.length} file(s), ${r.unrepaired.length} not\n`)
    for (const p of r.repaired) {
      process.stdout.write(`  repaired ${displayPath(p.path)}${p.fetchedChunks > 0 ? ` (${p.fetchedChunks} chunks from peers)` : ''}${p.alsoIn.length > 0 ? `; also in version${p.alsoIn.length === 1 ? '' : 's'} ${p.alsoIn.join(', ')} (same file)` : ''}\n`)
    }
    for (const p of r.unrepaired) process.stdout.write(`  NOT repaired ${displayPath(p.path)}: ${p.reason}\n`)
  }
  process.stdout.write(`${tree}@${result.seq} at ${result.path}: ${result.files} files, ${formatBytes(result.bytes)} verified, ${result.problems.length} problem(s)\n`)
  for (const p of result.problems) process.stdout.write(`  ${displayPath(p.path)}: ${p.reason}\n`)
  if (result.problems.length > 0 && r === undefined) process.stdout.write(`to rebuild them from the manifest: deltamesh verify --repair ${tree}\n`)
}
