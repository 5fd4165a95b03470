import { describe, expect, it } from 'vitest'
import { createServer, connect, type Socket } from 'node:net'
import type { MessageStream } from '@libp2p/interface'
import { coalesceSocketWrites } from '../../agent/net/socket-writes.js'

/** A connected pair of TCP sockets on 127.0.0.1. */
async function socketPair (): Promise<{ client: Socket, server: Socket, close: () => void }> {
  let accepted!: (s: Socket) => void
  const got = new Promise<Socket>(resolve => { accepted = resolve })
  const srv = createServer(s => accepted(s))
  await new Promise<void>(resolve => srv.listen(0, '127.0.0.1', resolve))
  const port = (srv.address() as { port: number }).port
  const client = connect(port, '127.0.0.1')
  const server = await got
  return { client, server, close: () => { client.destroy(); server.destroy(); srv.close() } }
}

/** A list of byte arrays as @libp2p/tcp's sendData gets it (iterable, with byteLength). */
function list (...arrays: Uint8Array[]): Iterable<Uint8Array> & { byteLength: number } {
  return Object.assign([...arrays], { byteLength: arrays.reduce((t, a) => t + a.byteLength, 0) })
}

describe('coalesced socket writes', () => {
  it('writes every array of a send, in order, with one writev', async () => {
    const { client, server, close } = await socketPair()
    try {
      const conn: { socket: Socket, sendData: (data: unknown) => unknown } = { socket: client, sendData: () => ({ sentBytes: 0, canSendMore: true }) }
      expect(coalesceSocketWrites(conn as unknown as MessageStream)).toBe(true)
      const writev = client._writev?.bind(client)
      let writevs = 0
      client._writev = (chunks, cb) => { writevs++; writev?.(chunks, cb) }
      const big = new Uint8Array(60_000).map((_, i) => i & 0xff)
      const received: Buffer[] = []
      let n = 0
      const all = new Promise<void>(resolve => server.on('data', (d: Buffer) => { received.push(d); n += d.byteLength; if (n === 60_030) resolve() }))
      const result = conn.sendData(list(Uint8Array.of(1, 2), big, new Uint8Array(28).fill(9))) as { sentBytes: number, canSendMore: boolean }
      expect(result.sentBytes).toBe(60_030)
      // everything was handed over: the caller waits for 'drain' only while the socket holds a high-water mark
      expect(result.canSendMore).toBe(client.writableLength < client.writableHighWaterMark)
      await all
      expect(writevs).toBe(1)
      expect(Buffer.concat(received).equals(Buffer.concat([Uint8Array.of(1, 2), big, new Uint8Array(28).fill(9)]))).toBe(true)
    } finally {
      close()
    }
  })

  it('leaves anything that is not a TCP connection as it is', () => {
    const sendData = (): { sentBytes: number, canSendMore: boolean } => ({ sentBytes: 0, canSendMore: true })
    const conn = { socket: {}, sendData }
    expect(coalesceSocketWrites(conn as unknown as MessageStream)).toBe(false)
    expect(conn.sendData).toBe(sendData)
  })
})
