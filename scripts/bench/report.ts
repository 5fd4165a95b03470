// The one table of `npm run bench`: per corpus, each figure for the lower bound, deltamesh and the
// incumbents, with how it was measured in the row's label, and deltamesh's ratio to rsync, to `rsync -z` (what
// users compare with) and to the best incumbent (< 1: deltamesh is better, for every row: fewer bytes, seconds, MiB).
import type { Corpus } from './corpus.js'
import type { DeltameshFigures } from './deltamesh.js'
import type { CasyncRun, RsyncRound, ZsyncRun } from './incumbents.js'
import type { Timed } from './proc.js'
import type { ScaleFigures } from './scale.js'

export interface CorpusFigures {
  corpus: Corpus
  /** The publisher's `[chunking] average` for this corpus (the bound is computed at it too). */
  chunkSize: string
  delta: number
  /** `delta` compressed as the wire would carry it. */
  deltaCompressed: number
  v2Bytes: number
  v2Files: number
  rsync1: RsyncRound
  /** The same single client with `-z`. */
  rsyncZ: RsyncRound
  rsync4: RsyncRound
  dry: Timed
  casync: CasyncRun
  zsync?: ZsyncRun
  dm: DeltameshFigures
}

type Cell = number | undefined

interface Row { label: string, unit: 'MB' | 's' | 'MiB', bound?: Cell, dm: Cell, dmNote?: string, rsync: Cell, rsyncZ?: Cell, casync: Cell, zsync: Cell }

const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0)

function fmt (v: Cell, unit: Row['unit']): string {
  if (v === undefined || !Number.isFinite(v)) return '—'
  if (unit === 'MB') { const m = v / 1e6; return m < 10 ? m.toFixed(2) : m.toFixed(1) }
  if (unit === 's') return v < 10 ? v.toFixed(2) : v.toFixed(1)
  return v.toFixed(0)
}

function ratio (a: Cell, b: Cell): string {
  if (a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) || b <= 0) return '—'
  return (a / b).toFixed(2)
}

function rows (f: CorpusFigures): Row[] {
  const { dm, rsync1, rsyncZ, rsync4, casync, zsync } = f
  const r1 = rsync1.clients[0] as RsyncRound['clients'][number]
  const rz = rsyncZ.clients[0] as RsyncRound['clients'][number]
  return [
    { label: 'received by 1 subscriber, MB — deltamesh: kernel TCP bytes of its sockets (ss); rsync, rsync -z: client `--stats` received; casync/zsync: bytes our HTTP origin wrote', unit: 'MB', bound: f.delta, dm: dm.one.tcpDown, rsync: r1.received, rsyncZ: rz.received, casync: casync.bytes, zsync: zsync?.bytes },
    { label: '… both directions, MB (deltamesh TCP sent + received; rsync sent + received; HTTP requests not counted)', unit: 'MB', dm: dm.one.tcpDown + dm.one.tcpUp, rsync: r1.received + r1.sent, rsyncZ: rz.received + rz.sent, casync: casync.bytes, zsync: zsync?.bytes },
    { label: 'origin upload, 1 subscriber, MB (deltamesh: publisher TCP sent)', unit: 'MB', bound: f.delta, dm: dm.one.pubTcpUp, rsync: r1.received, rsyncZ: rz.received, casync: casync.bytes, zsync: zsync?.bytes },
    { label: 'origin upload, 4 subscribers, MB (deltamesh: publisher TCP sent; rsync: Σ clients received)', unit: 'MB', bound: f.delta, dm: dm.four.pubTcpUp, rsync: sum(rsync4.clients.map(c => c.received)), casync: undefined, zsync: undefined },
    { label: 'origin CPU serving 1 subscriber, s (/proc utime+stime: publisher agent after publish; rsync daemon + its forks; our node HTTP origin)', unit: 's', dm: dm.one.pubServeCpu, rsync: rsync1.daemonCpu, rsyncZ: rsyncZ.daemonCpu, casync: casync.originCpu, zsync: zsync?.originCpu },
    { label: 'origin CPU serving 4 subscribers, s', unit: 's', dm: dm.four.pubServeCpu, rsync: rsync4.daemonCpu, casync: undefined, zsync: undefined },
    { label: 'publish v2, CPU s (deltamesh: publisher agent during `publish`, source flipped v1 → v2 in place; casync make; zsyncmake)', unit: 's', dm: dm.publish.cpu, rsync: undefined, casync: casync.make.cpu, zsync: zsync?.make.cpu },
    { label: 'publish v2, wall s (same)', unit: 's', dm: dm.publish.wall, rsync: undefined, casync: casync.make.wall, zsync: zsync?.make.wall },
    { label: 'first publish (v1, every file read), wall s — deltamesh; casync make of v2 for comparison', unit: 's', dm: dm.firstPublish.wall, rsync: undefined, casync: casync.make.wall, zsync: zsync?.make.wall },
    { label: 'setup, not a comparison: v1 to 5 subscribers, each from its own copy (subscribe --seed --seed-copy; publish start → all hold v1), wall s', unit: 's', dm: dm.initialSyncWall, rsync: undefined, casync: undefined, zsync: undefined },
    { label: 'rescan of the unchanged v2, wall s (deltamesh: publish again; rsync: `-a --delete --dry-run` against a copy)', unit: 's', dm: dm.rescan.wall, rsync: f.dry.wall, casync: undefined, zsync: undefined },
    { label: 'wall s, 1 subscriber, unlimited (deltamesh: publish start → holds v2; rsync/casync/zsync: the client run)', unit: 's', dm: dm.one.wall, rsync: r1.wall, rsyncZ: rz.wall, casync: casync.extract.wall, zsync: zsync?.fetch.wall },
    { label: `wall s, 4 subscribers with 20 MB/s downlinks (deltamesh \`[limits] down\`, agents started → all hold v2; rsync \`--bwlimit\`)`, unit: 's', dm: dm.four.wall, rsync: rsync4.wall, casync: undefined, zsync: undefined },
    { label: 'subscriber CPU s, 1 subscriber (deltamesh agent /proc; clients: GNU time user+sys)', unit: 's', dm: dm.one.cpu, rsync: r1.cpu, rsyncZ: rz.cpu, casync: casync.extract.cpu, zsync: zsync?.fetch.cpu },
    { label: 'peak RSS MiB, origin (deltamesh publisher VmHWM over the run; rsync daemon and forks, sampled; HTTP origin)', unit: 'MiB', dm: dm.publisherRssMiB, rsync: Math.max(rsync1.daemonRssMiB, rsync4.daemonRssMiB), casync: undefined, zsync: undefined },
    { label: 'peak RSS MiB, subscriber (deltamesh agent VmHWM; clients: GNU time max RSS)', unit: 'MiB', dm: Math.max(dm.one.rssMiB, dm.four.rssMiB), rsync: Math.max(r1.rssMiB, ...rsync4.clients.map(c => c.rssMiB)), casync: casync.extract.rssMiB, zsync: zsync?.fetch.rssMiB },
    { label: 'peak RSS MiB, publish (casync make; zsyncmake; deltamesh: the publisher agent above)', unit: 'MiB', dm: undefined, rsync: undefined, casync: casync.make.rssMiB, zsync: zsync?.make.rssMiB },
  ]
}

export function renderCorpusTable (all: CorpusFigures[]): string {
  const out = [
    '| corpus | figure | lower bound | deltamesh | rsync | rsync -z | casync | zsync | deltamesh ÷ rsync | deltamesh ÷ rsync -z | deltamesh ÷ best other |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ]
  for (const f of all) {
    for (const r of rows(f)) {
      const others = [r.rsync, r.rsyncZ, r.casync, r.zsync].filter((v): v is number => v !== undefined && Number.isFinite(v))
      const best = others.length === 0 ? undefined : Math.min(...others)
      out.push(`| ${f.corpus.name} | ${r.label} | ${fmt(r.bound, r.unit)} | ${fmt(r.dm, r.unit)} | ${fmt(r.rsync, r.unit)} | ${fmt(r.rsyncZ, r.unit)} | ${fmt(r.casync, r.unit)} | ${fmt(r.zsync, r.unit)} | ${ratio(r.dm, r.rsync)} | ${ratio(r.dm, r.rsyncZ)} | ${ratio(r.dm, best)} |`)
    }
  }
  return out.join('\n')
}

export function renderScale (s: ScaleFigures, n: number): string {
  const row = (what: string, r: ScaleFigures['v1']): string =>
    `| ${what} | ${(r.bytes / 1e6).toFixed(1)} | ${r.seconds.toFixed(1)} | ${r.fastest.toFixed(1)} | ${r.bound.toFixed(1)} | ${(r.seconds / r.bound).toFixed(2)} | ${r.star.toFixed(1)} | ${(r.pubUp / 1e6).toFixed(1)} (${(r.pubUp / r.bytes).toFixed(2)} ×) | ${r.pubCpu.toFixed(1)} |`
  return [
    `Scale: 1 publisher + ${n} subscribers, 17 agent processes on 127.0.0.1 sharing 2 cores; a generated ${s.sizeMB} MB tree (${s.files} files); every site's uplink and downlink limited to ${s.rate} (\`[limits]\`). ` +
      'Bound: max(size ÷ publisher uplink, size ÷ downlink, 16 × size ÷ Σ uplinks); star: 16 × size ÷ publisher uplink (what a single rsync origin with that uplink needs).',
    '',
    '| round | bytes to deliver, MB (unique chunks) | all 16 hold it, s (publish start →) | first one, s | bound, s | ÷ bound | star, s | publisher upload, MB (× bytes) | publisher CPU s |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    row('v1 from nothing', s.v1),
    row('v2 (a delta)', s.v2),
  ].join('\n')
}
