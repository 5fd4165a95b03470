import { generateKeyPairSync, sign } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { chunkIdOf } from '../../protocol/chunk-id.js'
import { formatPublisherKey, openEnvelope, parsePublisherKey, rawPublicKeyOf, signEnvelope, type EnvelopeFields } from '../../protocol/envelope.js'
import { encodeCanonical } from '../../protocol/codec.js'
import { decodeUntrusted } from '../../protocol/codec.js'

const { privateKey } = generateKeyPairSync('ed25519')
const fields = (): EnvelopeFields => ({
  tree: 'rhel-10/compose/BaseOS', seq: 7, label: 'RHEL-10.1-20261123.n.0', createdAtMs: 1_763_000_000_000,
  rootHash: chunkIdOf(Buffer.from('root')), rootSize: 123, publisherKey: rawPublicKeyOf(privateKey),
})

describe('envelope', () => {
  it('signs, opens and keeps every field', () => {
    const env = signEnvelope(fields(), privateKey)
    const opened = openEnvelope(env.bytes)
    expect(opened.tree).toBe('rhel-10/compose/BaseOS')
    expect(opened.seq).toBe(7)
    expect(opened.label).toBe('RHEL-10.1-20261123.n.0')
    expect(Buffer.from(opened.rootHash).equals(Buffer.from(fields().rootHash))).toBe(true)
  })

  it('rejects any flipped bit', () => {
    const env = signEnvelope(fields(), privateKey)
    let rejected = 0
    for (let i = 0; i < env.bytes.length; i++) {
      const copy = Buffer.from(env.bytes)
      copy[i] = (copy[i] as number) ^ 0x01
      try { openEnvelope(copy) } catch (err) { rejected++; expect(['BadSignatureError', 'InvalidMessageError', 'InvalidTreeNameError', 'LimitExceededError']).toContain((err as Error).name) }
    }
    expect(rejected).toBe(env.bytes.length)
  })

  it('rejects a payload re-signed by another key than the one it names', () => {
    const other = generateKeyPairSync('ed25519').privateKey
    expect(() => signEnvelope(fields(), other)).toThrow(/does not belong/)
    // forge: keep the original publisher key in the payload but sign with another key
    const env = signEnvelope(fields(), privateKey)
    const [payload] = decodeUntrusted(env.bytes, 'test') as [Uint8Array, Uint8Array]
    const forged = encodeCanonical([payload, sign(null, payload, other)])
    expect(() => openEnvelope(forged)).toThrow(expect.objectContaining({ name: 'BadSignatureError' }))
  })

  it('formats and parses publisher keys', () => {
    const raw = rawPublicKeyOf(privateKey)
    const text = formatPublisherKey(raw)
    expect(text).toMatch(/^ed25519:[A-Za-z0-9_-]{43}$/)
    expect(Buffer.from(parsePublisherKey(text)).equals(raw)).toBe(true)
    expect(() => parsePublisherKey('ed25519:abc')).toThrow()
    expect(() => parsePublisherKey('rsa:' + text.slice(8))).toThrow()
  })
})
