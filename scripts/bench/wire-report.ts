// bench:wire's table: MB/s and CPU ms per MB at each end for the floor, deltamesh and rsync over ssh, and the
// ratios against issue 17's targets for the first sync of the incompressible file.
import type { RsyncSshRun } from './rsync-ssh.js'
import type { SyncFigures } from './wire-deltamesh.js'
import type { FloorResult } from './wire-floor.js'

export interface WireFigures {
  when: string
  loadAtStart: string
  loadAtEnd: string
  sizeMiB: number
  sendKiB: number
  floor: FloorResult
  dm: { file: SyncFigures, repo?: SyncFigures }
  rs: { file: RsyncSshRun, repo?: RsyncSshRun, repoZ?: RsyncSshRun }
  repoDir?: string
  cipher: string
  sshVersion: string
}

interface Row { what: string, mbps: number, sendMsPerMB: number, recvMsPerMB: number, wireMB: number, rss: string }

const fmt = (n: number, digits = 1): string => Number.isFinite(n) ? n.toFixed(digits) : '–'

function floorRow (f: FloorResult, sendKiB: number): Row {
  const mb = f.bytes / 1e6
  return { what: `floor: bare libp2p stream, ${sendKiB} KiB send()s`, mbps: mb / f.seconds, sendMsPerMB: f.senderCpu * 1000 / mb, recvMsPerMB: f.receiverCpu * 1000 / mb, wireMB: mb, rss: `${fmt(f.senderRssMiB, 0)} / ${fmt(f.receiverRssMiB, 0)}` }
}

function dmRow (what: string, d: SyncFigures): Row {
  const mb = d.bytes / 1e6
  return { what, mbps: mb / d.seconds, sendMsPerMB: d.originCpu * 1000 / mb, recvMsPerMB: d.subscriberCpu * 1000 / mb, wireMB: d.frameBytes / 1e6, rss: `${fmt(d.originRssMiB, 0)} / ${fmt(d.subscriberRssMiB, 0)}` }
}

/** `bytes`: the payload (the file or tree's size), so that every row's MB are the same MB. */
function rsRow (what: string, r: RsyncSshRun, bytes: number): Row {
  const mb = bytes / 1e6
  return { what, mbps: mb / r.seconds, sendMsPerMB: r.serverCpu * 1000 / mb, recvMsPerMB: r.clientCpu * 1000 / mb, wireMB: (r.sent + r.received) / 1e6, rss: `${fmt(r.serverRssMiB, 0)} / –` }
}

function table (rows: Row[]): string {
  const head = `${'first sync'.padEnd(52)} ${'MB/s'.padStart(7)} ${'sender ms/MB'.padStart(13)} ${'receiver ms/MB'.padStart(15)} ${'wire MB'.padStart(9)}  peak RSS MiB (send / recv)`
  return [head, ...rows.map(r => `${r.what.padEnd(52)} ${fmt(r.mbps).padStart(7)} ${fmt(r.sendMsPerMB, 2).padStart(13)} ${fmt(r.recvMsPerMB, 2).padStart(15)} ${fmt(r.wireMB).padStart(9)}  ${r.rss}`)].join('\n')
}

/** `value` against `limit`: ✓ when within it (`atLeast`: value ≥ limit, else value ≤ limit). */
function target (label: string, value: number, limit: number, atLeast: boolean): string {
  const ok = atLeast ? value >= limit : value <= limit
  return `${ok ? '✓' : '✗'} ${label.padEnd(58)} ${fmt(value, 2).padStart(6)}  (target ${atLeast ? '≥' : '≤'} ${limit})`
}

export function wireReport (f: WireFigures): string {
  const fileMB = f.dm.file.bytes / 1e6
  const floor = floorRow(f.floor, f.sendKiB)
  const dm = dmRow(`deltamesh, ${fmt(fileMB, 0)} MB incompressible file`, f.dm.file)
  const rs = rsRow(`rsync -a over ssh, same file`, f.rs.file, f.dm.file.bytes)
  const rows = [floor, dm, rs]
  if (f.dm.repo !== undefined && f.rs.repo !== undefined && f.rs.repoZ !== undefined) {
    const what = `repo corpus (${f.dm.repo.files} files, ${fmt(f.dm.repo.bytes / 1e6, 0)} MB)`
    rows.push(dmRow(`deltamesh, ${what}`, f.dm.repo), rsRow('rsync -a over ssh, same corpus', f.rs.repo, f.dm.repo.bytes), rsRow('rsync -az over ssh, same corpus', f.rs.repoZ, f.dm.repo.bytes))
  }
  const lines = [
    `bench:wire ${f.when}, 127.0.0.1, load ${f.loadAtStart} at the start, ${f.loadAtEnd} at the end; ${f.sshVersion}, cipher ${f.cipher}`,
    'sender = floor sender / deltamesh origin (serving only) / sshd session (sshd + rsync server); receiver = floor receiver / subscriber / rsync client + ssh',
    'MB = 10^6 bytes of payload; wire MB: floor payload, deltamesh frames both ways (subscriber\'s counters), rsync --stats sent + received',
    '',
    table(rows),
    '',
    `targets (issue 17), first sync of the ${fmt(fileMB, 0)} MB file:`,
    target('throughput deltamesh / rsync over ssh', dm.mbps / rs.mbps, 1, true),
    target('origin CPU per MB deltamesh / sshd side', dm.sendMsPerMB / rs.sendMsPerMB, 1, false),
    target('subscriber CPU per MB deltamesh / rsync client side', dm.recvMsPerMB / rs.recvMsPerMB, 1, false),
    target('origin CPU per MB deltamesh / floor sender', dm.sendMsPerMB / floor.sendMsPerMB, 1.5, false),
    target('subscriber CPU per MB deltamesh / floor receiver', dm.recvMsPerMB / floor.recvMsPerMB, 1.5, false),
    `  (no target) throughput deltamesh / floor: ${fmt(dm.mbps / floor.mbps, 2)}; rsync over ssh / floor: ${fmt(rs.mbps / floor.mbps, 2)}`,
  ]
  if (rows.length === 6) {
    const [dmRepo, rsRepo, rsZ] = rows.slice(3) as [Row, Row, Row]
    lines.push(`repo corpus (no target for a first sync), deltamesh / rsync -a over ssh: throughput ${fmt(dmRepo.mbps / rsRepo.mbps, 2)}, origin CPU per MB ${fmt(dmRepo.sendMsPerMB / rsRepo.sendMsPerMB, 2)}, subscriber ${fmt(dmRepo.recvMsPerMB / rsRepo.recvMsPerMB, 2)}; wire bytes deltamesh / rsync -z ${fmt(dmRepo.wireMB / rsZ.wireMB, 3)}`)
    lines.push(`repo corpus: ${f.repoDir ?? ''}`)
  }
  return lines.join('\n')
}
