import { generateKeyPairSync } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { chunkIdOf } from '../../protocol/chunk-id.js'
import { formatPublisherKey, rawPublicKeyOf, signEnvelope } from '../../protocol/envelope.js'
import { admitEnvelope } from '../../agent/sync/admission.js'

const publisher = generateKeyPairSync('ed25519').privateKey
const stranger = generateKeyPairSync('ed25519').privateKey
const trusted = new Set([formatPublisherKey(rawPublicKeyOf(publisher))])
const env = (seq: number, root = 'r', key = publisher, tree = 'repo') => signEnvelope({ tree, seq, label: '', createdAtMs: 1, rootHash: chunkIdOf(Buffer.from(root)), rootSize: 10, publisherKey: rawPublicKeyOf(key) }, key)

describe('admitEnvelope', () => {
  it('accepts a newer version from a trusted key', () => {
    expect(admitEnvelope(env(1), trusted, undefined).verdict).toBe('accept')
    expect(admitEnvelope(env(3), trusted, { seq: 2, rootHash: chunkIdOf(Buffer.from('x')) }).verdict).toBe('accept')
  })
  it('rejects untrusted keys, replays, rollbacks and equivocation', () => {
    const head = { seq: 5, rootHash: chunkIdOf(Buffer.from('r')) }
    expect(admitEnvelope(env(6, 'r', stranger), trusted, head)).toMatchObject({ verdict: 'reject', reason: expect.stringMatching(/not trusted/) })
    expect(admitEnvelope(env(4), trusted, head)).toMatchObject({ verdict: 'reject', reason: expect.stringMatching(/replay or rollback/) })
    expect(admitEnvelope(env(5, 'other'), trusted, head)).toMatchObject({ verdict: 'reject', reason: expect.stringMatching(/equivocation/) })
    expect(admitEnvelope(env(5), trusted, head).verdict).toBe('duplicate')
  })
})
