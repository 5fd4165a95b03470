// deltamesh dashboard: renders /api/events snapshots (server-sent events; falls back to polling
// /api/snapshot). Plain browser JavaScript, no build step, nothing loaded from elsewhere. Every string that
// came from a peer (site names, labels, tree names) goes into the page as text, never as HTML.
'use strict'

const $ = (id) => document.getElementById(id)

/** el('td', {class: 'num'}, 'text', childNode…) */
function el (tag, attrs, ...children) {
  const node = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue
    if (k === 'class') node.className = v
    else if (k === 'title') node.title = v
    // CSSOM, not a style attribute: the page's CSP allows no inline styles
    else if (k === 'style') Object.assign(node.style, v)
    else node.setAttribute(k, String(v))
  }
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue
    node.append(typeof c === 'string' || typeof c === 'number' ? String(c) : c)
  }
  return node
}

function bytes (n) {
  if (n === undefined || n === null) return '–'
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let v = n; let u = 0
  while (Math.abs(v) >= 1024 && u < units.length - 1) { v /= 1024; u++ }
  return `${u === 0 ? Math.round(v) : v.toFixed(Math.abs(v) < 10 ? 2 : 1)} ${units[u]}`
}
// rates in decimal bytes per second, as limits are written (agent/core/rate.ts formatRate); sizes in binary units
function rate (n) {
  if (n === undefined || n === null) return 'unlimited'
  if (n >= 1e6) return `${(n / 1e6).toFixed(n >= 1e7 ? 0 : 1)}MB/s`
  if (n >= 1e3) return `${(n / 1e3).toFixed(0)}kB/s`
  return `${Math.round(n)}B/s`
}
function ago (ms) {
  if (ms === undefined || ms === null) return 'never'
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000))
  if (s < 60) return `${s} s ago`
  if (s < 3600) return `${Math.round(s / 60)} min ago`
  return `${(s / 3600).toFixed(1)} h ago`
}
function duration (ms) {
  const s = Math.round(ms / 1000)
  if (s < 120) return `${s} s`
  if (s < 7200) return `${Math.round(s / 60)} min`
  if (s < 172800) return `${(s / 3600).toFixed(1)} h`
  return `${Math.round(s / 86400)} d`
}
const time = (ms) => new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z')
const pct = (done, total) => total > 0 ? Math.min(100, Math.floor(100 * done / total)) : 100

function bar (fraction, cls) {
  return el('div', { class: `bar${cls ? ' ' + cls : ''}` }, el('div', { style: { width: `${Math.max(0, Math.min(100, fraction * 100)).toFixed(1)}%` } }))
}

function replace (id, ...nodes) { $(id).replaceChildren(...nodes) }

// Sites × trees

function cell (site, treeName, newest) {
  const t = site.status && site.status.trees.find(x => x.name === treeName)
  if (!t) return el('td', { 'data-tree': treeName, 'data-phase': 'none', class: 'sub' }, '–')
  const s = t.sync
  if (s && s.phase !== 'complete' && s.phase !== 'failed') {
    const p = pct(s.bytesDone, s.bytesTotal)
    return el('td', { 'data-tree': treeName, 'data-phase': 'syncing' },
      `${t.currentSeq ? 'v' + t.currentSeq + ' → ' : ''}v${s.seq} syncing ${p}%`,
      el('div', { class: 'sub' }, `${s.phase} · ${bytes(s.bytesDone)} of ${bytes(s.bytesTotal)} · ${rate(s.rateBps)}${etaOf(s)}`),
      bar(s.bytesTotal > 0 ? s.bytesDone / s.bytesTotal : 0))
  }
  if (s && s.phase === 'failed') {
    return el('td', { 'data-tree': treeName, 'data-phase': 'failed', class: 'cell-failed' }, `v${s.seq} failed${t.currentSeq ? ' (serving v' + t.currentSeq + ')' : ''}`)
  }
  if (t.currentSeq === undefined) return el('td', { 'data-tree': treeName, 'data-phase': 'none', class: 'sub' }, t.newestSeq ? `knows v${t.newestSeq}, holds none` : '–')
  const behind = newest !== undefined && t.currentSeq < newest
  return el('td', { 'data-tree': treeName, 'data-phase': behind ? 'behind' : 'complete', class: behind ? 'cell-behind' : 'cell-complete' },
    `v${t.currentSeq}${behind ? ` (behind: v${newest})` : ' ✓'}`)
}

// [[serve]]: where the site publishes the tree over HTTP(S) (what its metalinks list)
function withServes (td, site, treeName) {
  const serves = ((site.status && site.status.serves) || []).filter(v => v.tree === treeName)
  for (const v of serves) {
    td.append(el('div', { class: 'sub mono', 'data-serve': v.url, title: `preference ${v.preference}${v.location ? ', ' + v.location : ''}` }, v.url))
  }
  return td
}

function etaOf (s) {
  if (!(s.rateBps > 0) || s.bytesTotal <= s.bytesDone) return ''
  return ` · ETA ${duration(1000 * (s.bytesTotal - s.bytesDone) / s.rateBps)}`
}

function renderMatrix (snap) {
  const newest = {}
  for (const site of snap.sites) {
    for (const t of (site.status ? site.status.trees : [])) {
      for (const seq of [t.newestSeq, t.currentSeq]) if (seq !== undefined && !(newest[t.name] >= seq)) newest[t.name] = seq
    }
  }
  const head = el('tr', {}, el('th', {}, 'site'), el('th', {}, 'state'), el('th', {}, 'last status'), el('th', {}, 'agent'),
    ...snap.treeNames.map(n => el('th', {}, n)))
  const rows = snap.sites.map(site => el('tr', { 'data-site': site.name, 'data-state': site.state },
    el('td', {}, site.name, site.self ? el('span', { class: 'self-tag' }, ' (this site)') : null,
      el('div', { class: 'sub mono', title: site.peerId }, '…' + site.peerId.slice(-12))),
    el('td', {}, el('span', { class: `badge ${site.state}` }, site.state),
      el('div', { class: 'sub' }, site.self ? '' : site.connected ? 'connected' : site.configured ? 'not connected' : 'via mesh')),
    el('td', {}, site.self ? 'now' : ago(site.lastHeardMs)),
    el('td', {}, site.status ? site.status.agentVersion : '–', el('div', { class: 'sub' }, site.status ? 'up ' + duration(Date.now() - site.status.startedAtMs) : '')),
    ...snap.treeNames.map(n => withServes(cell(site, n, newest[n]), site, n))))
  replace('matrix', el('thead', {}, head), el('tbody', {}, ...rows))
  if (snap.treeNames.length === 0) $('matrix').append(el('caption', { class: 'sub' }, 'no trees published or subscribed anywhere yet'))
}

// Links and peers

function rateCell (r, limit) {
  return el('td', { class: 'num' }, `${rate(r)} / ${rate(limit)}`, limit ? bar(r / limit, 'limit') : null)
}

function renderLinks (snap) {
  const head = el('tr', {}, el('th', {}, 'link'), el('th', {}, 'peers'), el('th', { class: 'num' }, 'up: rate / limit'), el('th', { class: 'num' }, 'down: rate / limit'))
  const rows = snap.links.map(l => el('tr', { 'data-link': l.name },
    el('td', {}, l.name), el('td', {}, l.peerNames.length ? l.peerNames.join(', ') : String(l.peers)),
    rateCell(l.rateUp, l.limitUp), rateCell(l.rateDown, l.limitDown)))
  replace('links', el('thead', {}, head), el('tbody', {}, ...rows))

  const phead = el('tr', {}, ...['peer', 'state', 'up now', 'down now', 'sent', 'received', 'chunk bytes up / down', 'bad chunks', 'strikes']
    .map((h, i) => el('th', { class: i >= 2 ? 'num' : undefined }, h)))
  const prows = snap.peers.map(p => el('tr', { 'data-peer': p.name },
    el('td', {}, p.name, el('div', { class: 'sub mono' }, '…' + p.peerId.slice(-12))),
    el('td', {}, p.connected ? 'connected' : 'disconnected'),
    el('td', { class: 'num' }, rate(p.rateUp)), el('td', { class: 'num' }, rate(p.rateDown)),
    el('td', { class: 'num' }, bytes(p.bytesUp)), el('td', { class: 'num' }, bytes(p.bytesDown)),
    el('td', { class: 'num' }, `${bytes(p.chunkBytesUp)} / ${bytes(p.chunkBytesDown)}`),
    el('td', { class: 'num' }, p.badChunks), el('td', { class: 'num' }, p.strikes)))
  replace('peers', el('thead', {}, phead), el('tbody', {}, ...prows))
}

// Version history

function renderHistory (snap) {
  const blocks = snap.trees.map(t => {
    const where = t.subscribedTo ? `subscribed at ${t.subscribedTo}${(t.include || []).map(g => ' +' + g).join('')}${(t.exclude || []).map(g => ' -' + g).join('')}` : 'not subscribed here'
    const head = el('tr', {}, ...['seq', 'label', 'state here', 'publisher', 'created', 'files', 'tree size', 'crossed the network', 'held by']
      .map((h, i) => el('th', { class: i === 0 || (i >= 5 && i <= 7) ? 'num' : undefined }, h)))
    const rows = t.versions.map(v => el('tr', { 'data-seq': v.seq },
      el('td', { class: 'num' }, v.seq),
      el('td', {}, v.label || '–'),
      el('td', {}, v.state, v.unservable ? el('span', { class: 'warn', 'data-unservable': v.seq, title: v.unservable }, ' (not fully servable)') : ''),
      el('td', { class: 'mono', title: v.publisherKey }, v.publishedHere ? 'this site' : v.publisherKey.slice(0, 16) + '…'),
      el('td', {}, time(v.createdAtMs)),
      el('td', { class: 'num' }, v.files === undefined ? '–' : v.files,
        // never silent: entries of the source this version does not hold
        v.skipped ? el('span', { class: 'warn', 'data-skipped': v.skipped.count, title: v.skipped.sample.map(s => `${s.path}: ${s.reason}`).join('\n') }, ` (${v.skipped.count} not published)`) : ''),
      el('td', { class: 'num' }, bytes(v.bytes)),
      el('td', { class: 'num' }, v.newBytes === undefined ? '–' : `${bytes(v.newBytes)}${v.bytes ? ` (${(100 * v.newBytes / v.bytes).toFixed(1)} %)` : ''}`),
      el('td', {}, v.heldBy.join(', ') || '–')))
    // a version held back (the filter selects nothing, or too few files), or a failing sync: said above the table
    const problem = t.refused ? t.refused.message : t.stuck ? 'waiting: ' + t.stuck : t.syncError
    const unservable = t.versions.filter(v => v.unservable).map(v => el('p', { class: 'warn' }, `v${v.seq}: ${v.unservable}`))
    // a newer version the subscription's gate refused: held, not served; the command's last lines say why
    const gate = t.gateRefused
    const watch = (snap.watches || []).find(w => w.tree === t.name)
    return el('div', { 'data-history': t.name }, el('h3', {}, t.name, el('span', { class: 'sub' }, ' — ' + where)),
      watch ? el('p', { class: 'sub', 'data-watch': watch.phase }, watchLine(watch)) : null,
      problem ? el('p', { class: 'warn', 'data-refused': t.refused ? t.refused.seq : undefined, 'data-stuck': t.stuck ? 'yes' : undefined }, problem) : null,
      ...unservable,
      gate ? el('div', { class: 'warn', 'data-gate-refused': gate.seq }, el('p', {}, gate.message), el('pre', { class: 'output' }, gate.output.join('\n'))) : null,
      el('table', {}, el('thead', {}, head), el('tbody', {}, ...rows)))
  })
  replace('history', ...(blocks.length ? blocks : [el('p', { class: 'sub' }, 'no versions here yet')]))
}

// Live feed: the agent's latest events (the same as `deltamesh events`), newest first

function eventText (e) {
  const what = e.tree ? `${e.tree}${e.seq !== undefined ? '@' + e.seq : ''}` : (e.peer ? '…' + e.peer.slice(-12) : '')
  const parts = [e.label, e.phase, e.bytesTotal !== undefined ? `${bytes(e.bytesDone)} of ${bytes(e.bytesTotal)}` : undefined, e.path ? '→ ' + e.path : undefined, e.reason, e.message]
  return `${what} ${parts.filter(p => p !== undefined && p !== '').join(' · ')}`
}

function renderFeed (snap) {
  const events = (snap.events || []).slice(-50).reverse()
  const rows = events.map(e => el('tr', { 'data-event': e.type },
    el('td', { class: 'mono' }, time(e.timeMs)), el('td', {}, e.type), el('td', {}, eventText(e),
      e.output && e.output.length ? el('pre', { class: 'output' }, e.output.join('\n')) : null)))
  replace('feed', el('tbody', {}, ...rows))
  if (events.length === 0) $('feed').append(el('caption', { class: 'sub' }, 'no events yet'))
}

// [[publish]] watch = true: the source, what the watcher is doing, the last publish
function watchLine (w) {
  const state = w.phase === 'pending' && w.dueAtMs ? `change pending, publish in ${duration(Math.max(0, w.dueAtMs - Date.now()))}` : w.phase
  const last = w.last ? (w.last.error ? `last publish failed: ${w.last.error}` : `last publish v${w.last.seq}${w.last.unchanged ? ' (unchanged)' : ''} ${ago(w.last.atMs)}`) : 'not published yet'
  return `publishing ${w.src} on change (${w.dirs} directories watched): ${state}; ${last}${w.watchError ? ' — ' + w.watchError : ''}`
}

// Throughput plot: hand-drawn SVG, this site's up/down each second plus other sites' download rates.

const SVG = 'http://www.w3.org/2000/svg'
function svg (tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag)
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v))
  for (const c of children) node.append(c)
  return node
}
const COLORS = ['#3b82f6', '#16a34a', '#d97706', '#db2777', '#0891b2', '#7c3aed', '#65a30d', '#dc2626']

function renderPlot (snap) {
  const W = 760; const H = 220; const L = 70; const R = 10; const T = 10; const B = 28
  const series = [
    { name: `${snap.self.name} down`, points: snap.throughput.map(p => [p[0], p[2]]) },
    { name: `${snap.self.name} up`, points: snap.throughput.map(p => [p[0], p[1]]), dashed: true },
    ...snap.sites.filter(s => !s.self && s.rateHistory.length > 0).map(s => ({ name: `${s.name} down`, points: s.rateHistory.map(p => [p[0], p[2]]) })),
  ]
  const now = snap.generatedAtMs
  // the plot spans what has been recorded, from one minute up to the ten minutes the agent keeps
  let oldest = now
  for (const s of series) if (s.points.length > 0 && s.points[0][0] < oldest) oldest = s.points[0][0]
  const span = Math.min(10 * 60000, Math.max(60000, now - oldest))
  const t0 = now - span
  let max = 1024
  for (const s of series) for (const [t, v] of s.points) if (t >= t0 && v > max) max = v
  max *= 1.1
  const x = (t) => L + (W - L - R) * (t - t0) / span
  const y = (v) => T + (H - T - B) * (1 - v / max)
  const g = svg('svg', { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'throughput over time' })
  for (let i = 0; i <= 4; i++) {
    const v = max * i / 4
    g.append(svg('line', { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: '#e5e7eb' }))
    g.append(svg('text', { x: L - 6, y: y(v) + 4, 'text-anchor': 'end', 'font-size': 10, fill: '#667085' }, rate(v)))
  }
  for (let i = 0; i <= 5; i++) {
    const back = span * i / 5
    const label = i === 0 ? 'now' : back < 120000 ? `-${Math.round(back / 1000)} s` : `-${(back / 60000).toFixed(back % 60000 === 0 ? 0 : 1)} min`
    g.append(svg('text', { x: x(now - back), y: H - 8, 'text-anchor': 'middle', 'font-size': 10, fill: '#667085' }, label))
  }
  series.forEach((s, i) => {
    const pts = s.points.filter(p => p[0] >= t0).map(p => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`)
    if (pts.length < 2) return
    g.append(svg('polyline', { points: pts.join(' '), fill: 'none', stroke: COLORS[i % COLORS.length], 'stroke-width': i < 2 ? 2 : 1.2, 'stroke-dasharray': s.dashed ? '4 3' : 'none' }))
  })
  const legend = el('div', { class: 'legend' }, ...series.map((s, i) => el('span', {}, el('i', { style: { background: COLORS[i % COLORS.length] } }), s.name)))
  replace('plot', g, legend)
}

// Wiring

function render (snap) {
  $('site-name').textContent = `— ${snap.self.name}`
  document.title = `deltamesh — ${snap.self.name}`
  $('self-info').textContent = `peer ${snap.self.peerId} · deltamesh ${snap.self.version} · up ${duration(Date.now() - snap.self.startedAtMs)}`
  $('stale-after').textContent = duration(snap.staleAfterMs)
  renderMatrix(snap)
  renderLinks(snap)
  renderPlot(snap)
  renderHistory(snap)
  renderFeed(snap)
}

function live (on, text) {
  const n = $('live')
  n.className = `live ${on ? 'on' : 'off'}`
  n.textContent = text
}

let pollTimer
function poll () {
  fetch('/api/snapshot').then(r => r.json()).then(s => { render(s); live(true, 'live (polling)') })
    .catch(() => live(false, 'agent not answering'))
    .finally(() => { pollTimer = setTimeout(poll, 2000) })
}

function connect () {
  if (typeof EventSource !== 'function') { poll(); return }
  const es = new EventSource('/api/events')
  es.addEventListener('snapshot', (e) => {
    try { render(JSON.parse(e.data)); live(true, 'live') } catch (err) { live(false, `cannot render: ${err.message}`) }
  })
  // EventSource reconnects by itself; say so meanwhile
  es.onerror = () => live(false, 'reconnecting…')
}

window.addEventListener('DOMContentLoaded', connect)
window.addEventListener('beforeunload', () => clearTimeout(pollTimer))
