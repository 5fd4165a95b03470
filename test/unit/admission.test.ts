import { generateKeyPairSync } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { chunkIdOf } from '../../protocol/chunk-id.js'
import { formatPublisherKey, rawPublicKeyOf, signEnvelope } from '../../protocol/envelope.js'
import { admitEnvelope, RejectionCounters, rejectReasonOf } from '../../agent/net/admission.js'
import { BadSignatureError, InvalidMessageError } from '../../protocol/errors.js'

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
    expect(admitEnvelope(env(4), trusted, head)).toMatchObject({ verdict: 'reject', code: 'rollback', reason: expect.stringMatching(/rollback/) })
    expect(admitEnvelope(env(4), trusted, head, chunkIdOf(Buffer.from('r')))).toMatchObject({ verdict: 'reject', code: 'replay' })
    expect(admitEnvelope(env(4), trusted, head, chunkIdOf(Buffer.from('other')))).toMatchObject({ verdict: 'reject', code: 'rollback' })
    expect(admitEnvelope(env(6, 'r', stranger), trusted, head)).toMatchObject({ code: 'untrusted-key' })
    expect(admitEnvelope(env(5, 'other'), trusted, head)).toMatchObject({ code: 'equivocation' })
    expect(admitEnvelope(env(5, 'other'), trusted, head)).toMatchObject({ verdict: 'reject', reason: expect.stringMatching(/equivocation/) })
    expect(admitEnvelope(env(5), trusted, head).verdict).toBe('duplicate')
  })
})

describe('rejection counters', () => {
  it('count per reason with a stable shape; open errors map to bad-signature or malformed', () => {
    const c = new RejectionCounters()
    c.count('replay'); c.count('replay'); c.count('bad-signature')
    expect(c.total).toBe(3)
    expect(c.snapshot()).toMatchObject({ replay: 2, 'bad-signature': 1, rollback: 0, 'bad-manifest': 0 })
    expect(rejectReasonOf(new BadSignatureError())).toBe('bad-signature')
    expect(rejectReasonOf(new InvalidMessageError('x'))).toBe('malformed')
  })
})
