// bench:wire (a), the floor: two processes of wire-floor-node.ts (the agent's own libp2p node, one bare stream)
// carry `bytes` from sender to receiver. CPU is utime+stime of each process from /proc, read after the
// connection and stream are up (sender printed "ready") and again once the receiver's ack is back at the sender;
// the wall time is the sender's, from the first send() to the ack.
import { spawn, type ChildProcess } from 'node:child_process'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createInterface } from 'node:readline'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { loadOrCreatePeerKey } from '../../agent/net/node.js'
import { cpuOf, peakRssMiB, track } from './proc.js'

const NODE_SCRIPT = join(dirname(fileURLToPath(import.meta.url)), 'wire-floor-node.js')

export interface FloorResult {
  bytes: number
  seconds: number
  senderCpu: number
  receiverCpu: number
  senderRssMiB: number
  receiverRssMiB: number
}

/** Resolves with the first stdout line `accept` returns a value for; rejects when the process exits first. */
async function lineFrom<T> (child: ChildProcess, what: string, accept: (line: string) => T | undefined, stderr: () => string): Promise<T> {
  return await new Promise<T>((resolve, reject) => {
    const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream })
    const onExit = (code: number | null): void => { reject(new Error(`${what} exited ${code}: ${stderr().slice(-2000)}`)) }
    child.once('exit', onExit)
    lines.on('line', line => {
      const value = accept(line)
      if (value === undefined) return
      child.off('exit', onExit)
      lines.close()
      resolve(value)
    })
  })
}

function startEnd (args: string[]): { child: ChildProcess, stderr: () => string } {
  const child = track(spawn(process.execPath, [NODE_SCRIPT, ...args], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, DELTAMESH_LOG_LEVEL: 'warn' } }))
  let err = ''
  child.stderr?.on('data', (d: Buffer) => { err = (err + d.toString()).slice(-20_000) })
  return { child, stderr: () => err }
}

async function stopEnd (child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise<void>(resolve => child.once('exit', () => resolve()))
  child.kill('SIGTERM')
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
  await exited
  clearTimeout(timer)
}

/** `dir` holds the two peer keys (made here with the agent's loadOrCreatePeerKey). */
export async function runFloor (dir: string, bytes: number, sendSize: number): Promise<FloorResult> {
  const keyFiles = { sender: join(dir, 'floor-sender.key'), receiver: join(dir, 'floor-receiver.key') }
  const ids = {
    sender: peerIdFromPrivateKey(await loadOrCreatePeerKey(keyFiles.sender)).toString(),
    receiver: peerIdFromPrivateKey(await loadOrCreatePeerKey(keyFiles.receiver)).toString(),
  }
  const receiver = startEnd(['receive', keyFiles.receiver, ids.sender, String(bytes)])
  let sender: ReturnType<typeof startEnd> | undefined
  try {
    const addr = await lineFrom(receiver.child, 'floor receiver', l => l.startsWith('{') ? (JSON.parse(l) as { addr?: string }).addr : undefined, receiver.stderr)
    sender = startEnd(['send', keyFiles.sender, ids.receiver, addr, String(bytes), String(sendSize)])
    await lineFrom(sender.child, 'floor sender', l => l === 'ready' ? true : undefined, (sender as { stderr: () => string }).stderr)
    const pids = { sender: sender.child.pid as number, receiver: receiver.child.pid as number }
    const c0 = { sender: cpuOf(pids.sender).self, receiver: cpuOf(pids.receiver).self }
    const done = lineFrom(sender.child, 'floor sender', l => l.startsWith('{') ? JSON.parse(l) as { bytes: number, seconds: number } : undefined, sender.stderr)
    sender.child.stdin?.write('go\n')
    const r = await done
    return {
      bytes: r.bytes, seconds: r.seconds,
      senderCpu: cpuOf(pids.sender).self - c0.sender, receiverCpu: cpuOf(pids.receiver).self - c0.receiver,
      senderRssMiB: peakRssMiB(pids.sender), receiverRssMiB: peakRssMiB(pids.receiver),
    }
  } finally {
    if (sender !== undefined) await stopEnd(sender.child)
    await stopEnd(receiver.child)
  }
}
