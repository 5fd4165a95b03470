// Sync progress in the CLI: a cli-progress bar on a terminal; plain lines at most every few seconds
// otherwise (logs, CI), so a long pull is visible without flooding a log file.

import { SingleBar } from 'cli-progress'
import type { SyncProgress, SyncResult } from '../api/api.js'
import { formatBytes } from '../core/format.js'
import { formatRate } from '../core/rate.js'

export { formatBytes }

/** Plain-line output interval when stderr is not a terminal. */
export const DEFAULT_PROGRESS_LINE_INTERVAL_MS = 2_000

export interface ProgressReporter {
  update (p: SyncProgress): void
  /** Removes the bar (on a terminal) so that what follows prints on a clean line; idempotent. */
  stop (): void
  /** The last progress seen, for messages such as "timed out at X of Y". */
  readonly last: SyncProgress | undefined
}

export interface ProgressReporterInit {
  stream?: NodeJS.WriteStream
  tty?: boolean
  intervalMs?: number
  now?: () => number
}

export function createProgressReporter (init: ProgressReporterInit = {}): ProgressReporter {
  const stream = init.stream ?? process.stderr
  const tty = init.tty ?? stream.isTTY
  return tty ? new BarReporter(stream) : new LineReporter(stream, init.intervalMs ?? DEFAULT_PROGRESS_LINE_INTERVAL_MS, init.now ?? Date.now)
}

class LineReporter implements ProgressReporter {
  last: SyncProgress | undefined
  private lastPrintedMs = -Infinity
  private lastPhase: string | undefined
  private lastStuck: string | undefined

  constructor (private readonly stream: NodeJS.WritableStream, private readonly intervalMs: number, private readonly now: () => number) {}

  update (p: SyncProgress): void {
    this.last = p
    const t = this.now()
    // A phase change (or a new reason to be stuck) is worth a line at once; otherwise at most one line per interval.
    if (p.phase === this.lastPhase && p.stuck?.message === this.lastStuck && t - this.lastPrintedMs < this.intervalMs) return
    this.lastPhase = p.phase
    this.lastStuck = p.stuck?.message
    this.lastPrintedMs = t
    this.stream.write(formatProgressLine(p) + '\n')
  }

  stop (): void {}
}

class BarReporter implements ProgressReporter {
  last: SyncProgress | undefined
  private readonly bar: SingleBar
  private started = false

  constructor (stream: NodeJS.WritableStream) {
    this.bar = new SingleBar({
      stream,
      format: 'sync {name} [{bar}] {percentage}% | {done} / {size} | {chunks} chunks | {rate} | ETA {etaText} {phaseText}',
      barCompleteChar: '\u2588',
      barIncompleteChar: '\u2591',
      hideCursor: true,
      fps: 5,
    })
  }

  update (p: SyncProgress): void {
    this.last = p
    const total = Math.max(p.bytesTotal, 1)
    const payload = {
      name: `${p.tree}@${p.seq}`,
      done: formatBytes(p.bytesDone),
      size: formatBytes(p.bytesTotal),
      chunks: `${p.chunksDone}/${p.chunksTotal}`,
      rate: formatRate(p.rateBps),
      etaText: formatEta(p),
      phaseText: (p.phase === 'fetching' ? '' : `(${p.phase})`) + (p.stuck === undefined ? '' : ` waiting: ${p.stuck.message}`),
    }
    if (!this.started) {
      this.bar.start(total, p.bytesDone, payload)
      this.started = true
    } else {
      this.bar.setTotal(total)
      this.bar.update(p.bytesDone, payload)
    }
  }

  stop (): void {
    if (this.started) this.bar.stop()
    this.started = false
  }
}

/** e.g. `sync tree@5: 41.2 MiB / 120.0 MiB (34%), 812/2300 chunks, 18.3 MiB/s, ETA 4 s` */
export function formatProgressLine (p: SyncProgress): string {
  if (p.phase === 'waiting') return `sync ${p.tree}: waiting${p.stuck === undefined ? ' for a trusted version to be announced' : `: ${p.stuck.message}`}`
  const name = `sync ${p.tree}@${p.seq}`
  if (p.phase === 'failed') return `${name}: failed${p.error === undefined ? '' : `: ${p.error}`}`
  if (p.bytesTotal === 0 && p.phase !== 'complete') return `${name}: ${p.phase}`
  const pct = p.bytesTotal === 0 ? 100 : Math.floor(100 * p.bytesDone / p.bytesTotal)
  return `${name}: ${formatBytes(p.bytesDone)} / ${formatBytes(p.bytesTotal)} (${pct}%), ${p.chunksDone}/${p.chunksTotal} chunks, ` +
    `${formatRate(p.rateBps)}, ETA ${formatEta(p)}` +
    (p.sources > 0 ? `, ${p.sources} peer${p.sources === 1 ? '' : 's'}` : '') +
    (p.phase === 'fetching' ? '' : ` (${p.phase})`) +
    (p.stuck === undefined ? '' : `; waiting: ${p.stuck.message}`)
}

/**
 * The final line of a successful sync. `seenBytes`: what the progress this command showed fetched, summed over
 * the versions it waited through (the result counts the last version's only: a version announced during a sync
 * is often built from the chunks the one before fetched).
 */
export function formatSyncSummary (r: SyncResult, seenBytes = 0): string {
  const seconds = r.durationMs / 1000
  const fetched = Math.max(r.bytesFetched, seenBytes)
  if (r.alreadyHeld === true) return `sync ${r.tree}@${r.seq}: held here already, nothing to fetch (its files were not re-read: \`deltamesh verify\` checks them)`
  if (fetched === 0) return `sync ${r.tree}@${r.seq}: complete; every chunk was on this disk already, nothing fetched`
  return `sync ${r.tree}@${r.seq}: complete, fetched ${formatBytes(fetched)} in ${formatDuration(seconds)}` +
    (seconds > 0 && fetched === r.bytesFetched ? ` (${formatRate(r.bytesFetched / seconds)})` : '')
}

/** Seconds left at the current rate, or undefined when there is no rate yet. */
export function etaSeconds (p: SyncProgress): number | undefined {
  const left = Math.max(0, p.bytesTotal - p.bytesDone)
  if (left === 0) return 0
  if (p.rateBps <= 0) return undefined
  return left / p.rateBps
}

function formatEta (p: SyncProgress): string {
  const eta = etaSeconds(p)
  return eta === undefined ? '?' : formatDuration(Math.ceil(eta))
}

export function formatDuration (seconds: number): string {
  const s = Math.round(seconds)
  if (seconds < 10) return `${Number(seconds.toFixed(seconds < 1 ? 2 : 1))} s`
  if (s < 60) return `${s} s`
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`
}

