// One end of bench:wire's floor: a libp2p node built by the agent's own createNode (agent/net/node.ts: TCP,
// Noise with the agent's frame decoder and coalesced writes, yamux with the agent's stream window, identify,
// ping, gossipsub, the allowlist gater) carrying bytes over one bare stream — nothing of deltamesh's
// protocols above it. Started twice by wire-floor.ts, one process per end:
//   receive KEYFILE SENDER_PEER_ID BYTES          prints {"addr"} once listening; acks after BYTES arrived
//   send KEYFILE RECEIVER_PEER_ID ADDR BYTES SEND  dials, prints "ready", waits for "go" on stdin, sends BYTES
//                                                  in SEND-byte send()s with drain backpressure, prints
//                                                  {"bytes","seconds"} once the receiver's ack is back
// Either end stops on SIGTERM or when its stdin closes.
import '../../agent/polyfill.js'
import { randomFillSync } from 'node:crypto'
import { createInterface } from 'node:readline'
import { multiaddr } from '@multiformats/multiaddr'
import { peerIdFromString } from '@libp2p/peer-id'
import { createNode, PeerAllowlist, loadOrCreatePeerKey, type DeltameshNode } from '../../agent/net/node.js'

export const FLOOR_PROTOCOL = '/deltamesh-bench/floor/1.0.0'
/** Distinct payload bytes cycled through by the sender (larger than any buffer on the way: no reuse artefacts). */
const POOL_BYTES = 16 * 1024 * 1024

async function startNode (keyFile: string, peer: string, listen: string[]): Promise<DeltameshNode> {
  return await createNode({ privateKey: await loadOrCreatePeerKey(keyFile), listen, allowlist: new PeerAllowlist([peer]) })
}

function stopOnExit (node: DeltameshNode): void {
  const stop = (): void => { void Promise.resolve(node.stop()).finally(() => process.exit(0)) }
  process.once('SIGTERM', stop)
  process.stdin.once('end', stop)
  process.stdin.resume()
}

async function receive (keyFile: string, sender: string, bytes: number): Promise<void> {
  const node = await startNode(keyFile, sender, ['/ip4/127.0.0.1/tcp/0'])
  await node.handle(FLOOR_PROTOCOL, async (stream) => {
    let got = 0
    for await (const buf of stream) {
      got += buf.byteLength
      if (got >= bytes) break
    }
    const ack = Buffer.alloc(8)
    ack.writeBigUInt64BE(BigInt(got))
    if (!stream.send(ack)) await stream.onDrain()
    await stream.close()
  })
  stopOnExit(node)
  console.log(JSON.stringify({ addr: node.getMultiaddrs()[0]?.toString() }))
}

async function send (keyFile: string, receiver: string, addr: string, bytes: number, sendSize: number): Promise<void> {
  const node = await startNode(keyFile, receiver, [])
  stopOnExit(node)
  const ma = multiaddr(addr)
  if (ma.getComponents().find(c => c.name === 'p2p')?.value !== peerIdFromString(receiver).toString()) throw new Error(`${addr} is not ${receiver}`)
  const stream = await node.dialProtocol(ma, FLOOR_PROTOCOL)
  const pool = randomFillSync(Buffer.allocUnsafe(POOL_BYTES))
  const lines = createInterface({ input: process.stdin })
  console.log('ready')
  await new Promise<void>(resolve => { lines.on('line', l => { if (l.trim() === 'go') resolve() }) })
  const acked = (async (): Promise<number> => {
    for await (const buf of stream) return Number(Buffer.from(buf.subarray()).readBigUInt64BE(0))
    throw new Error('stream ended without the receiver\'s ack')
  })()
  const t0 = performance.now()
  let at = 0
  for (let sent = 0; sent < bytes; sent += sendSize) {
    const n = Math.min(sendSize, bytes - sent)
    if (at + n > pool.length) at = 0
    // the pool is never written after the fill: a view still queued in the stream stays valid
    if (!stream.send(pool.subarray(at, at + n))) await stream.onDrain()
    at += n
  }
  const received = await acked
  const seconds = (performance.now() - t0) / 1000
  if (received !== bytes) throw new Error(`receiver acked ${received} bytes of ${bytes}`)
  console.log(JSON.stringify({ bytes, seconds }))
  await stream.close().catch(() => {})
}

const [role, ...args] = process.argv.slice(2)
const main = role === 'receive'
  ? receive(args[0] as string, args[1] as string, Number(args[2]))
  : role === 'send'
    ? send(args[0] as string, args[1] as string, args[2] as string, Number(args[3]), Number(args[4]))
    : Promise.reject(new Error(`unknown role ${role ?? '(none)'}: receive | send`))
main.catch(err => { console.error(err); process.exit(1) })
