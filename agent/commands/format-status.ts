// Human-readable forms of the agent's status: the `status` command, `peers list` and `limit`.
import type { AgentStatus, LinkStatus } from '../api/api.js'
import { formatRate } from '../core/rate.js'
import { formatBytes } from './common.js'
import { formatDuration, formatProgressLine } from './progress.js'
import { formatHooks } from './react.js'

export function formatStatus (s: AgentStatus): string {
  const now = Date.now()
  const out: string[] = [
    `agent ${s.peerId} (deltamesh ${s.version}), up ${formatDuration((now - s.startedAtMs) / 1000)}`,
    `listening:     ${s.multiaddrs.length === 0 ? '-' : s.multiaddrs.join(' ')}`,
    `publisher key: ${s.publisherKey}`,
    `dashboard:     ${s.dashboard?.url ?? 'off ([dashboard] enabled = false)'}`,
    ...(s.mirrors === undefined ? [] : [`metalinks:     ${s.mirrors.url}metalink?tree=T&path=P, ${s.mirrors.url}mirrorlist?tree=T`]),
    `traffic:       up ${formatBytes(s.counters.bytesUp)}, down ${formatBytes(s.counters.bytesDown)}; ` +
      `rejected: ${s.counters.envelopesRejected} envelopes${byReason(s.envelopeRejections)}, ${s.counters.chunksRejected} chunks`,
    '',
  ]
  if (s.trees.length === 0) out.push('no trees')
  else {
    out.push(table([['TREE', 'CURRENT', 'NEWEST', 'SUBSCRIBED AT', 'SYNC'], ...s.trees.map(t => [
      t.name, t.currentSeq?.toString() ?? '-', t.newestSeq?.toString() ?? '-',
      t.subscribedTo === undefined ? '-' : t.subscribedTo + filtersOf(t.include, t.exclude, t),
      t.sync === undefined ? (t.currentSeq !== undefined && t.currentSeq === t.newestSeq ? 'up to date' : '-') : formatProgressLine(t.sync).replace(/^sync /, ''),
    ])]))
    // every wait with a reason, and every version its publisher cannot serve completely: said in words
    for (const t of s.trees) {
      if (t.stuck !== undefined) out.push(`${t.name}: waiting: ${t.stuck.message}`)
      for (const v of t.versions) if (v.unservable !== undefined) out.push(`${t.name}@${v.seq}: ${v.unservable.message}`)
    }
    const versions = s.trees.flatMap(t => t.versions.map(v => [
      `${t.name}@${v.seq}`, (v.gate === undefined || v.gate.outcome === 'passed' ? v.state : `${v.state} (gate ${v.gate.outcome})`) + (v.unservable === undefined ? '' : ', not fully servable'), v.label === '' ? '-' : v.label, v.bytes === undefined ? '-' : formatBytes(v.bytes),
      v.files?.toString() ?? '-', v.newBytes === undefined ? '-' : formatBytes(v.newBytes), new Date(v.createdAtMs).toISOString().replace(/\.\d+Z$/, 'Z'),
    ]))
    if (versions.length > 0) out.push('', table([['VERSION', 'STATE', 'LABEL', 'SIZE', 'FILES', 'NEW', 'CREATED'], ...versions]))
    const hooks = formatHooks(s.trees)
    if (hooks.length > 0) out.push('', ...hooks)
    const serves = s.trees.flatMap(t => (t.serves ?? []).map(v => [t.name, v.url, v.location ?? '-', String(v.preference), v.listed ? 'yes' : 'no: filtered subscription']))
    if (serves.length > 0) out.push('', table([['SERVED TREE', 'URL', 'LOCATION', 'PREFERENCE', 'IN METALINKS'], ...serves]))
  }
  if ((s.watches ?? []).length > 0) out.push('', formatWatches(s.watches ?? [], now))
  out.push('', s.peers.length === 0 ? 'no peers' : formatPeers(s))
  const links = s.links.filter(l => l.kind !== 'peer' || l.limit.up !== null || l.limit.down !== null || l.queue.length > 0)
  if (links.length > 0) out.push('', formatLinks(links))
  const weights = Object.entries(s.treeWeights)
  if (weights.length > 0) out.push('', `tree weights: ${weights.map(([t, w]) => `${t}=${w}`).join(', ')}`)
  return out.join('\n') + '\n'
}

/** [[publish]] sources watched: what each is doing, and its last publish. */
function formatWatches (watches: NonNullable<AgentStatus['watches']>, now: number): string {
  return table([['PUBLISH ON CHANGE', 'SOURCE', 'STATE', 'LAST PUBLISH'], ...watches.map(w => {
    const state = w.phase === 'pending' && w.dueAtMs !== undefined ? `pending (publish in ${formatDuration(Math.max(0, w.dueAtMs - now) / 1000)})` : w.phase
    const last = w.last === undefined ? '-' : `${w.last.error !== undefined ? `failed: ${w.last.error}` : w.last.unchanged === true ? `v${w.last.seq ?? '?'} unchanged` : `v${w.last.seq ?? '?'}`} ${formatDuration((now - w.last.atMs) / 1000)} ago`
    return [w.tree, `${w.src} (${w.dirs} dirs${w.watchError === undefined ? '' : `; ${w.watchError}`})`, state, last]
  })])
}

/** ' (replay 1, bad-signature 2)': the non-zero reasons only. */
function byReason (counts: Record<string, number> | undefined): string {
  const parts = Object.entries(counts ?? {}).filter(([, n]) => n > 0).map(([reason, n]) => `${reason} ${n}`)
  return parts.length === 0 ? '' : ` (${parts.join(', ')})`
}

function filtersOf (include: string[] | undefined, exclude: string[] | undefined, t?: { allowEmpty?: boolean, maxDropPercent?: number }): string {
  const parts = [...(include ?? []).map(g => `+${g}`), ...(exclude ?? []).map(g => `-${g}`)]
  if (t?.allowEmpty === true) parts.push('allow-empty')
  if (t?.maxDropPercent !== undefined) parts.push(`max-drop ${t.maxDropPercent}%`)
  return parts.length === 0 ? '' : ` (${parts.join(' ')})`
}

export function formatPeers (s: AgentStatus): string {
  const now = Date.now()
  return table([['PEER', 'NAME', 'STATE', 'UP', 'DOWN', 'CHUNKS UP/DOWN', 'BAD', 'STRIKES'], ...s.peers.map(p => [
    p.peerId, p.name ?? '-',
    p.bannedUntilMs !== undefined && p.bannedUntilMs > now ? `banned ${formatDuration((p.bannedUntilMs - now) / 1000)}` : p.connected ? 'connected' : 'disconnected',
    formatBytes(p.bytesUp), formatBytes(p.bytesDown), `${p.chunksUp}/${p.chunksDown}`, String(p.badChunks), String(p.strikes),
  ])])
}

export function formatLinks (links: LinkStatus[]): string {
  const limit = (n: number | null): string => n === null ? 'unlimited' : formatRate(n)
  const source = (l: LinkStatus): string => {
    const parts: string[] = []
    if (l.override !== undefined) parts.push(`runtime ${Object.entries(l.override).map(([d, r]) => `${d} ${r}`).join(', ')}`)
    if (l.window !== undefined) parts.push(`window ${l.window}`)
    return parts.length === 0 ? 'config' : parts.join('; ')
  }
  const queue = (l: LinkStatus): string => l.queue.length === 0
    ? '-'
    : l.queue.map(q => `${q.direction === 'up' ? '↑' : '↓'}${q.flow.length > 24 ? q.flow.slice(0, 12) + '…' + q.flow.slice(-8) : q.flow}:${formatBytes(q.bytes)}${q.weight === 1 ? '' : `×${q.weight}`}`).join(' ')
  const linkName = (l: LinkStatus): string => l.kind === 'global' ? 'global' : l.kind === 'link' ? `${l.name} (${l.peers.length} peer${l.peers.length === 1 ? '' : 's'})` : `peer ${l.name}`
  const rows = table([['LINK', 'LIMIT UP', 'LIMIT DOWN', 'RATE UP', 'RATE DOWN', 'SOURCE', 'QUEUED'], ...links.map(l => [
    linkName(l), limit(l.limit.up), limit(l.limit.down), `${formatRate(l.rate.up)}`, `${formatRate(l.rate.down)}`, source(l), queue(l),
  ])])
  // the schedules of config.toml, window by window, the one in force now marked
  const windows = links.flatMap(l => l.schedule.map(w => `  ${l.kind === 'global' ? 'global' : l.name}: ${w.window}` +
    `${w.up === undefined ? '' : ` up ${limit(w.up)}`}${w.down === undefined ? '' : ` down ${limit(w.down)}`}${l.window === w.window ? '  (in force now)' : ''}`))
  return rows + (windows.length === 0 ? '' : `\nschedules (config.toml, the agent's local time; rates in decimal bytes/s):\n${windows.join('\n')}`)
}

/** Left-aligned columns separated by two spaces; the last column is not padded. */
export function table (rows: string[][]): string {
  const widths: number[] = []
  for (const row of rows) row.forEach((cell, i) => { widths[i] = Math.max(widths[i] ?? 0, cell.length) })
  return rows.map(row => row.map((cell, i) => i === row.length - 1 ? cell : cell.padEnd(widths[i] ?? 0)).join('  ')).join('\n')
}
