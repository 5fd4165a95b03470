import { idsEqual } from '../../protocol/chunk-id.js'
import { describeEnvelope, formatPublisherKey, type Envelope } from '../../protocol/envelope.js'

// Whether a signed envelope (already signature-checked by openEnvelope) may become a tree's newest
// version here. Any peer may relay a version: the signature and the trust list decide, never the relay.

export type Admission =
  | { verdict: 'accept' }
  /** Already known (same seq, same root): nothing to do, nothing wrong. */
  | { verdict: 'duplicate' }
  | { verdict: 'reject', reason: string }

export interface KnownHead {
  seq: number
  rootHash: Uint8Array
}

/**
 * @param trustedKeys the publisher keys ('ed25519:…') trusted for envelope.tree
 * @param newest the newest version of the tree this agent has accepted so far
 */
export function admitEnvelope (envelope: Envelope, trustedKeys: ReadonlySet<string>, newest: KnownHead | undefined): Admission {
  const key = formatPublisherKey(envelope.publisherKey)
  const what = describeEnvelope(envelope)
  if (!trustedKeys.has(key)) return { verdict: 'reject', reason: `${what}: publisher key ${key} is not trusted for ${envelope.tree}` }
  if (newest === undefined || envelope.seq > newest.seq) return { verdict: 'accept' }
  if (envelope.seq === newest.seq) {
    return idsEqual(envelope.rootHash, newest.rootHash)
      ? { verdict: 'duplicate' }
      : { verdict: 'reject', reason: `${what}: a different version with the same seq ${envelope.seq} is already known (equivocation or forgery)` }
  }
  return { verdict: 'reject', reason: `${what}: older than the newest known seq ${newest.seq} (replay or rollback)` }
}
