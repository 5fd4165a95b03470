// One publish from the command line, and how it is printed: shared by `publish` and `publish --watch`.
import { formatRate } from '../core/rate.js'
import type { SkippedEntries } from '../store/types.js'
import type { PublishRequest } from '../api/api.js'
import { loadPublisherKey } from '../core/identity.js'
import { formatBytes, withLocalContext } from './common.js'
import { viaAgent } from './remote.js'

export interface PublishCliOptions { home?: string, label?: string, json?: boolean, strict?: boolean, force?: boolean, watch?: boolean, quiet: string, maxDelay: string }
type PrintablePublish = Parameters<typeof printPublish>[0]

/** One publish: through the running agent (it holds the database, and announces the version), else locally. */
export async function publishOnce (homeArg: string | undefined, request: PublishRequest, signal?: AbortSignal): Promise<PrintablePublish> {
  const remote = await viaAgent(homeArg, async api => await api.publish(request, signal))
  if (remote !== undefined) return { envelope: remote, rootHex: remote.root, stats: remote, skipped: remote.skipped, unchanged: remote.unchanged }
  const { publishVersion } = await import('../publish/publish.js')
  const { chunkingFor } = await import('../../protocol/chunking.js')
  return await withLocalContext(homeArg, async ctx => {
    const chunking = chunkingFor(ctx.config.chunking, request.tree)
    return await publishVersion({
      tree: request.tree, source: request.source, label: request.label, strict: request.strict, force: request.force, index: ctx.store.index, catalog: ctx.store.catalog,
      publisherKey: await loadPublisherKey(ctx.home.publisherKey), chunking,
      chunkFile: async (path, s, size, options) => await ctx.pool.chunkFile(path, chunking, s, size, options),
      verifyFile: async (path, chunks, s) => await ctx.pool.verifyFile(path, chunks, s), log: ctx.log, signal,
    })
  })
}

export function printPublish (result: { envelope: { tree: string, seq: number, label: string }, rootHex: string, stats: { files: number, bytes: number, chunks: number, newChunks: number, newBytes: number, cachedFiles: number, verifiedFiles?: number, manifestBytes: number, durationMs: number, hardlinks?: number }, skipped?: SkippedEntries, unchanged?: boolean }, json: boolean): void {
  const { envelope, stats } = result
  const skipped = result.skipped ?? { count: 0, sample: [] }
  if (json) {
    process.stdout.write(JSON.stringify({ tree: envelope.tree, seq: envelope.seq, label: envelope.label, root: result.rootHex, ...stats, skipped, ...(result.unchanged === true ? { unchanged: true } : {}) }) + '\n')
    return
  }
  // never silent: what the version does not hold goes to stderr, whatever else is printed
  if (skipped.count > 0) {
    process.stderr.write(`WARNING: ${skipped.count} entr${skipped.count === 1 ? 'y' : 'ies'} of the source ${skipped.count === 1 ? 'is' : 'are'} NOT in ${envelope.tree}@${envelope.seq} (use --strict to refuse to publish instead):\n` +
      skipped.sample.map(s => `  ${s.path}: ${s.reason}\n`).join('') +
      (skipped.count > skipped.sample.length ? `  … and ${skipped.count - skipped.sample.length} more (see the agent's log)\n` : ''))
  }
  if (result.unchanged === true) {
    process.stdout.write(`unchanged: ${envelope.tree}@${envelope.seq} is this tree already (root ${result.rootHex}); nothing published (--force publishes it again)\n`)
    return
  }
  const seconds = stats.durationMs / 1000
  process.stdout.write(`published ${envelope.tree}@${envelope.seq}${envelope.label === '' ? '' : ` (${envelope.label})`} root ${result.rootHex}\n` +
    `  ${stats.files} files, ${formatBytes(stats.bytes)}, ${stats.chunks} chunks; new: ${stats.newChunks} chunks, ${formatBytes(stats.newBytes)}; ` +
    `${stats.hardlinks !== undefined && stats.hardlinks > 0 ? `${stats.hardlinks} hardlinks; ` : ''}${stats.cachedFiles} files unchanged (not re-read), ${stats.verifiedFiles ?? 0} re-read and found unchanged (only their ctime moved); manifest ${formatBytes(stats.manifestBytes)}; ${seconds.toFixed(2)} s` +
    `${seconds > 0 ? `, ${formatRate(stats.bytes / seconds)}` : ''}\n`)
}
