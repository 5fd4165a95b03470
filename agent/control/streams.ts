// The control API's long answers besides sync: a version diff and the event stream, each NDJSON (one JSON
// object per line) on a response the route opened. See server.ts for the table of endpoints.
import type { ServerResponse } from 'node:http'
import { once } from 'node:events'
import type { Logger } from '../core/log.js'
import type { AgentApi, DiffRequest } from '../api/api.js'
import type { AgentEvent } from '../api/events.js'
import { errorBody } from './errors.js'

/** Events queued for a reader whose socket is backed up; past it they are dropped and counted. */
export const MAX_QUEUED_EVENTS = 1000

export function line (event: unknown): string { return JSON.stringify(event) + '\n' }

function openNdjson (res: ServerResponse): void {
  res.writeHead(200, { 'Content-Type': 'application/x-ndjson', 'Cache-Control': 'no-store' })
  res.flushHeaders()
}

/** {type:'change',change}… then {type:'done',summary} or {type:'error',error}; waits for the socket as it goes. */
export async function streamDiff (res: ServerResponse, api: AgentApi, request: DiffRequest, signal: AbortSignal, log: Logger): Promise<void> {
  // a request that fails before the first change (unknown tree, version not held) is an HTTP error
  let opened = false
  try {
    const summary = await api.diff(request, {
      signal,
      onChange: async change => {
        if (!opened) { openNdjson(res); opened = true }
        if (!res.write(line({ type: 'change', change }))) await once(res, 'drain', { signal })
      },
    })
    if (!opened) openNdjson(res)
    res.end(line({ type: 'done', summary }))
  } catch (err) {
    if (signal.aborted) { log.debug({ tree: request.tree }, 'diff reader went away'); return }
    if (!opened) throw err
    res.end(line({ type: 'error', error: errorBody(err) }))
  }
}

/**
 * Every event (of `tree` and of no tree) until the client goes. A reader that does not keep up gets the
 * first MAX_QUEUED_EVENTS queued, then one 'events-dropped' event with how many it missed.
 */
export async function streamEvents (res: ServerResponse, api: AgentApi, tree: string | undefined, signal: AbortSignal): Promise<void> {
  openNdjson(res)
  const queue: AgentEvent[] = []
  let dropped = 0
  const flush = (): void => {
    while (queue.length > 0 && !res.writableNeedDrain && !res.destroyed) res.write(line(queue.shift()))
    if (dropped > 0 && queue.length === 0 && !res.writableNeedDrain && !res.destroyed) {
      const last = Date.now()
      res.write(line({ id: 0, type: 'events-dropped', time: new Date(last).toISOString(), timeMs: last, count: dropped, ...(tree === undefined ? {} : { tree }) }))
      dropped = 0
    }
  }
  res.on('drain', flush)
  await api.events({
    tree,
    signal,
    onEvent: event => {
      if (res.destroyed) return
      if (queue.length >= MAX_QUEUED_EVENTS) { dropped++; return }
      queue.push(event)
      flush()
    },
  })
}
