import { spawnSync } from 'node:child_process'

// TCP bytes per process from the kernel (ss -tinp: tcp_info bytes_received / bytes_acked per socket).
// deltamesh's counters count its own frames (chunks, WANTs, heads) but not gossipsub (announcements, HAVE)
// nor noise/yamux framing; this counts everything that went through the sockets.

export interface SockBytes { pid: number, received: number, sent: number }

function tcpSockets (pids: Set<number>): Map<string, SockBytes> {
  const out = new Map<string, SockBytes>()
  const r = spawnSync('ss', ['-tinpH', 'state', 'established'], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 })
  if (r.status !== 0) return out
  let current: { key: string, pid: number, info: string } | undefined
  const flush = (): void => {
    if (current === undefined) return
    const received = /bytes_received:(\d+)/.exec(current.info)
    const acked = /bytes_acked:(\d+)/.exec(current.info)
    // bytes_acked counts one more than the data (the SYN)
    out.set(current.key, { pid: current.pid, received: received === null ? 0 : Number(received[1]), sent: acked === null ? 0 : Math.max(0, Number(acked[1]) - 1) })
    current = undefined
  }
  for (const line of r.stdout.split('\n')) {
    if (line.trim() === '') continue
    if (/^\s/.test(line)) { if (current !== undefined) current.info += line; continue }
    flush()
    const pid = /pid=(\d+)/.exec(line)
    const addrs = line.split(/\s+/).filter(t => /^[\d.[\]:a-f*%]+:\d+$/i.test(t))
    if (pid === null || addrs.length < 2 || !pids.has(Number(pid[1]))) continue
    current = { key: `${pid[1]} ${addrs[0]} ${addrs[1]}`, pid: Number(pid[1]), info: line }
  }
  flush()
  return out
}

/** Samples the sockets of `pids` until stopped; per pid, bytes moved since start (closed sockets: up to the last sample). */
export class TcpMeter {
  private readonly first: Map<string, SockBytes>
  private readonly last = new Map<string, SockBytes>()
  private timer?: NodeJS.Timeout
  constructor (private readonly pids: Set<number>) {
    this.first = tcpSockets(pids)
    this.timer = setInterval(() => { this.sample() }, 500)
  }

  private sample (): Map<string, SockBytes> {
    const now = tcpSockets(this.pids)
    for (const [k, v] of now) this.last.set(k, v)
    return now
  }

  stop (): { perPid: Map<number, { received: number, sent: number }>, closed: number, opened: number } {
    clearInterval(this.timer)
    const now = this.sample()
    const perPid = new Map<number, { received: number, sent: number }>()
    for (const pid of this.pids) perPid.set(pid, { received: 0, sent: 0 })
    for (const [k, v] of this.last) {
      const before = this.first.get(k) ?? { received: 0, sent: 0 }
      const p = perPid.get(v.pid)
      if (p === undefined) continue
      p.received += v.received - before.received
      p.sent += v.sent - before.sent
    }
    let closed = 0
    for (const k of this.last.keys()) if (!now.has(k)) closed++
    let opened = 0
    for (const k of this.last.keys()) if (!this.first.has(k)) opened++
    return { perPid, closed, opened }
  }
}
