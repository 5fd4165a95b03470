// The receiver's half of rate limiting: chunks are asked for only as fast as the download limits allow,
// in small groups, so what arrives never bursts beyond one bucket even though the scheduler hands a peer
// a whole window of chunks at once. Requests that come back without data give their tokens back, and so
// does compression: a group is paced at its chunks' raw size (what it may cost), then refunded down to the
// frame bytes it actually cost on the wire.

import type { FetchFailure, FetchFailureReason, FetchResult } from '../net/chunk-client.js'
import type { ChunkRef } from '../../protocol/manifest.js'
import type { FetchFn } from './chunk-pump.js'
import { toHex } from '../../protocol/chunk-id.js'

export interface DownloadPacer {
  downloadLimited (peer: string): boolean
  paceDownload (peer: string, tree: string, bytes: number, signal?: AbortSignal): Promise<void>
  refundDownload (peer: string, bytes: number): void
}

/** Requested at once when pacing: small next to any bucket (≥ 256 KiB), a few chunks per WANT frame. */
export const PACED_GROUP_BYTES = 128 * 1024
/** What a BLOCK frame costs on the wire beyond the chunk itself (type, id, length prefixes). */
export const BLOCK_FRAME_OVERHEAD = 48

/** Failures after which the peer will not answer the rest of the request either. */
const SESSION_FAILURES = new Set<FetchFailureReason>(['disconnected', 'unreachable', 'stalled', 'protocol-error', 'remote-error'])

/** Wraps a fetch so that requests for `tree` are paced; unlimited peers are asked directly. */
export function pacedFetch (fetch: FetchFn, pacer: DownloadPacer, tree: string, groupBytes = PACED_GROUP_BYTES): FetchFn {
  return async (peerId, wants, options) => {
    if (!pacer.downloadLimited(peerId)) return await fetch(peerId, wants, options)
    const result: FetchResult = { delivered: 0, bytes: 0, failed: [] }
    const cost = (w: ChunkRef): number => w.size + BLOCK_FRAME_OVERHEAD
    let sessionFailure: FetchFailure | undefined
    const onFailure = (failure: FetchFailure): void => {
      if (SESSION_FAILURES.has(failure.reason)) sessionFailure ??= failure
      options.onFailure?.(failure)
    }
    const failRest = (rest: ChunkRef[], reason: FetchFailureReason, error?: Error): void => {
      for (const w of rest) {
        const failure: FetchFailure = { id: w.id, reason, error }
        result.failed.push(failure)
        options.onFailure?.(failure)
      }
    }
    const running: Array<Promise<void>> = []
    let i = 0
    while (i < wants.length) {
      const group: ChunkRef[] = []
      let bytes = 0
      while (i < wants.length && (group.length === 0 || bytes + cost(wants[i] as ChunkRef) <= groupBytes)) {
        const w = wants[i++] as ChunkRef
        group.push(w)
        bytes += cost(w)
      }
      if (sessionFailure !== undefined) { failRest([...group, ...wants.slice(i)], sessionFailure.reason, sessionFailure.error); break }
      try {
        await pacer.paceDownload(peerId, tree, bytes, options.signal)
      } catch (err) {
        failRest([...group, ...wants.slice(i)], 'aborted', err as Error)
        break
      }
      running.push(fetch(peerId, group, { ...options, onFailure }).then(r => {
        result.delivered += r.delivered
        result.bytes += r.bytes
        if (r.wireBytes !== undefined) result.wireBytes = (result.wireBytes ?? 0) + r.wireBytes
        result.failed.push(...r.failed)
        const size = new Map(group.map(w => [toHex(w.id), cost(w)]))
        const unanswered = r.failed.reduce((n, f) => n + (size.get(toHex(f.id)) ?? 0), 0)
        const saved = r.wireBytes === undefined ? 0 : Math.max(0, bytes - unanswered - r.wireBytes)
        if (unanswered + saved > 0) pacer.refundDownload(peerId, unanswered + saved)
      }))
    }
    await Promise.all(running)
    return result
  }
}
