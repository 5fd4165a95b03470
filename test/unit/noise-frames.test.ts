import { describe, expect, it } from 'vitest'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { multiaddrConnectionPair } from '@libp2p/utils'
import type { ComponentLogger, Logger, MessageStream, Upgrader } from '@libp2p/interface'
import { cheapFrameNoise, noiseFrameLength } from '../../agent/net/noise-frames.js'

/** A silent logger (the libp2p logger package is not a direct dependency). */
const silent: Logger = Object.assign(() => {}, { error: () => {}, trace: () => {}, enabled: false, newScope: () => silent })
const logger: ComponentLogger = { forComponent: () => silent }

async function encrypter (): Promise<ReturnType<ReturnType<typeof cheapFrameNoise>>> {
  const privateKey = await generateKeyPair('Ed25519')
  const upgrader = { getStreamMuxers: () => new Map() } as unknown as Upgrader
  return cheapFrameNoise()({ privateKey, peerId: peerIdFromPrivateKey(privateKey), logger, upgrader })
}

/** Everything `stream` receives, as one buffer, once `bytes` have arrived. */
async function receive (stream: MessageStream, bytes: number): Promise<Uint8Array> {
  const got: Uint8Array[] = []
  let n = 0
  return await new Promise(resolve => {
    stream.addEventListener('message', evt => {
      got.push(evt.data.subarray())
      n += evt.data.byteLength
      if (n >= bytes) resolve(Buffer.concat(got))
    })
  })
}

describe('noise frame length decoder', () => {
  it('reads a big-endian uint16 (lists, the decoder buffer, are covered by the connection test)', () => {
    expect(noiseFrameLength(Uint8Array.of(0x12, 0x34, 0xff))).toBe(0x1234)
    expect(noiseFrameLength(Uint8Array.of(0xff, 0xef))).toBe(0xffef)
  })

  it('throws a RangeError (the decoder\'s "need more bytes") below 2 bytes', () => {
    expect(() => noiseFrameLength(new Uint8Array(0))).toThrow(RangeError)
    expect(() => noiseFrameLength(Uint8Array.of(1))).toThrow(RangeError)
  })

  it('is installed on real noise connections, which still carry data both ways in frames of every size', async () => {
    const [a, b] = multiaddrConnectionPair()
    const [left, right] = await Promise.all([encrypter(), encrypter()])
    const [out, inn] = await Promise.all([
      left.secureOutbound(a, { skipStreamMuxerNegotiation: true }),
      right.secureInbound(b, { skipStreamMuxerNegotiation: true }),
    ])
    for (const secured of [out, inn]) {
      expect((secured.connection as unknown as { decoder: { lengthDecoder: unknown } }).decoder.lengthDecoder).toBe(noiseFrameLength)
    }
    // larger than one noise frame (65 519 bytes of payload), so frames and their prefixes split across reads
    const payload = new Uint8Array(200_000).map((_, i) => (i * 7) & 0xff)
    const arrived = receive(inn.connection, payload.byteLength)
    out.connection.send(payload)
    expect(Buffer.from(await arrived).equals(Buffer.from(payload))).toBe(true)
    const back = receive(out.connection, 3)
    inn.connection.send(Uint8Array.of(1, 2, 3))
    expect([...await back]).toEqual([1, 2, 3])
  })
})
