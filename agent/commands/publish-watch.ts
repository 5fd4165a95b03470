// `deltamesh publish --watch TREE SRC`: publish SRC now, then whenever it changes (lsyncd's job, done by the
// publisher itself): once it has been quiet for --quiet, or --max-delay after the first change while it keeps
// changing; never two publishes at once. Each publish goes through the running agent when there is one (it
// announces the version at once), else straight to the home's database. Runs until SIGINT or SIGTERM.
import { parseDuration } from '../core/duration.js'
import { TreeWatcher } from '../publish/tree-watcher.js'
import { checkLabelTemplate, expandLabel, PublishSchedule } from '../publish/publish-schedule.js'
import { ExitError } from './common.js'
import { printPublish, publishOnce, type PublishCliOptions } from './publish-once.js'
import { viaAgent } from './remote.js'

function durationOption (name: string, text: string): number {
  try {
    return parseDuration(text)
  } catch (err) {
    throw new ExitError(`${name} ${(err as Error).message}`, 2)
  }
}

/** The seq the tree's next version gets, for {seq} in the label (from the agent, else the home's catalog). */
async function nextSeq (homeArg: string | undefined, tree: string): Promise<number> {
  const status = await viaAgent(homeArg, async api => await api.status())
  if (status !== undefined) {
    const t = status.trees.find(x => x.name === tree)
    return Math.max(0, t?.currentSeq ?? 0, ...(t?.versions ?? []).map(v => v.seq)) + 1
  }
  const { withLocalContext } = await import('./common.js')
  return await withLocalContext(homeArg, async ctx => {
    const last = (await ctx.store.catalog.listVersions(tree)).reduce((m, v) => Math.max(m, v.seq), 0)
    return Math.max(last, (await ctx.store.catalog.getTree(tree))?.currentSeq ?? 0) + 1
  })
}

export async function runPublishWatch (homeArg: string | undefined, tree: string, src: string, opts: PublishCliOptions): Promise<void> {
  const quietMs = durationOption('--quiet', opts.quiet)
  const maxDelayMs = durationOption('--max-delay', opts.maxDelay)
  if (opts.label !== undefined) { try { checkLabelTemplate(opts.label) } catch (err) { throw new ExitError(`--label ${(err as Error).message}`, 2) } }
  let watcher: TreeWatcher | undefined
  const schedule = new PublishSchedule({
    quietMs,
    maxDelayMs,
    publish: async signal => {
      await watcher?.refresh()
      const label = opts.label === undefined ? undefined : expandLabel(opts.label, { seq: await nextSeq(homeArg, tree), nowMs: Date.now() })
      const result = await publishOnce(homeArg, { tree, source: src, label, strict: opts.strict === true, force: opts.force === true }, signal)
      printPublish(result, opts.json === true)
      return { seq: result.envelope.seq, unchanged: result.unchanged }
    },
    onError: err => { process.stderr.write(`publish ${tree} failed: ${err.message} (retrying)\n`) },
  })
  watcher = new TreeWatcher(src, {
    onChange: () => { schedule.changed() },
    onError: err => { process.stderr.write(`watching ${src}: ${err.message}\n`) },
  })
  await watcher.start()
  process.stderr.write(`watching ${src} (${watcher.dirs} directories): publishing ${tree} once quiet for ${opts.quiet}, at most ${opts.maxDelay} after a change; Ctrl-C stops\n`)
  schedule.now()
  // the watches and timers do not hold the process open (in the agent they must not): this does, until a signal
  const keepAlive = setInterval(() => {}, 1 << 30)
  await new Promise<void>(resolve => {
    const stop = (): void => {
      clearInterval(keepAlive)
      process.removeListener('SIGINT', stop)
      process.removeListener('SIGTERM', stop)
      watcher?.close()
      schedule.stop().then(resolve, resolve)
    }
    process.once('SIGINT', stop)
    process.once('SIGTERM', stop)
  })
}
