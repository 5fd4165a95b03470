// Noise with a length decoder that does not build an Error per received batch.
// @chainsafe/libp2p-noise decodes its 2-byte frame lengths with a LengthPrefixedDecoder whose loop asks for
// the next length until the decoder throws a RangeError ("not enough bytes"). That happens at the end of
// almost every TCP read, and a fresh RangeError captures a stack trace each time: profiled on a publisher
// serving 4 subscribers it was 6 % of the process's CPU (1.2 s of 20.8 s), for nothing but control flow.
// The decoder below throws one preallocated RangeError instead (no capture); the result is the same.
import { noise } from '@chainsafe/libp2p-noise'
import { LengthPrefixedDecoder } from '@libp2p/utils'
import type { SecuredConnection } from '@libp2p/interface'

/** What a LengthPrefixedDecoder hands its length decoder: bytes, or a list of byte arrays (its buffer). */
type Buffered = Parameters<LengthPrefixedDecoder['decode']>[0]

/** Thrown, not built, whenever fewer than 2 bytes are buffered: the decoder stops at any RangeError. */
const NEED_MORE_BYTES = new RangeError('noise frame length: fewer than 2 bytes buffered')

/** Noise's uint16 big-endian frame length, as its own uint16BEDecode reads it. */
export function noiseFrameLength (data: Buffered): number {
  if (data.length < 2) throw NEED_MORE_BYTES
  if (data instanceof Uint8Array) return ((data[0] as number) << 8) | (data[1] as number)
  return data.getUint16(0)
}

/** The part of a LengthPrefixedDecoder we replace (a private field in its typings). */
interface PatchableDecoder { lengthDecoder: (data: Buffered) => number }

/**
 * Installs noiseFrameLength in the connection noise returned. Returns whether it did: a noise release that
 * no longer keeps a LengthPrefixedDecoder in `decoder` is left as it is (correct, only slower).
 */
export function patchNoiseConnection (secured: SecuredConnection): boolean {
  const decoder = (secured.connection as unknown as { decoder?: unknown }).decoder
  if (!(decoder instanceof LengthPrefixedDecoder)) return false
  const patchable = decoder as unknown as PatchableDecoder
  if (typeof patchable.lengthDecoder !== 'function') return false
  patchable.lengthDecoder = noiseFrameLength
  return true
}

type EncrypterFactory = ReturnType<typeof noise>

/** Wraps an encrypter factory (noise's by default) so that every secured connection gets the cheap decoder. */
export function cheapFrameNoise (factory: EncrypterFactory = noise()): EncrypterFactory {
  return (components) => {
    const encrypter = factory(components)
    const outbound = encrypter.secureOutbound.bind(encrypter)
    const inbound = encrypter.secureInbound.bind(encrypter)
    encrypter.secureOutbound = async (connection, options) => {
      const secured = await outbound(connection, options)
      patchNoiseConnection(secured)
      return secured
    }
    encrypter.secureInbound = async (connection, options) => {
      const secured = await inbound(connection, options)
      patchNoiseConnection(secured)
      return secured
    }
    return encrypter
  }
}
