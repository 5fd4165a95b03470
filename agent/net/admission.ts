import { idsEqual } from '../../protocol/chunk-id.js'
import { describeEnvelope, formatPublisherKey, type Envelope } from '../../protocol/envelope.js'
import { BadSignatureError } from '../../protocol/errors.js'

// Whether a signed envelope (already signature-checked by openEnvelope) may become a tree's newest
// version here. Any peer may relay a version: the signature and the trust list decide, never the relay.

/**
 * Why a version was refused; each is counted apart in `status` so an operator can tell an attack
 * (forgery, rollback) from a misconfiguration (a key not trusted yet).
 */
export const REJECT_REASONS = [
  /** Signed by a key not trusted for the tree. */
  'untrusted-key',
  /** The signature does not verify. */
  'bad-signature',
  /** Does not decode as an envelope, or says another tree/seq than the frame carrying it. */
  'malformed',
  /** An envelope for another tree, on this tree's topic. */
  'wrong-tree',
  /** An older version we already know, sent again. */
  'replay',
  /** A trusted signature on a seq below the newest known, for a version we never had. */
  'rollback',
  /** A second, different version under a seq we already know. */
  'equivocation',
  /** The signed root or manifest does not decode or its totals disagree (nothing of it is materialized). */
  'bad-manifest',
] as const
export type RejectReason = typeof REJECT_REASONS[number]

export type Admission =
  | { verdict: 'accept' }
  /** Already known (same seq, same root): nothing to do, nothing wrong. */
  | { verdict: 'duplicate' }
  | { verdict: 'reject', code: RejectReason, reason: string }

export interface KnownHead {
  seq: number
  rootHash: Uint8Array
}

/**
 * @param trustedKeys the publisher keys ('ed25519:…') trusted for envelope.tree
 * @param newest the newest version of the tree this agent has accepted so far
 * @param knownRootAtSeq the root of the version we hold (or held) at envelope.seq, if any: tells a replay from a rollback
 */
export function admitEnvelope (envelope: Envelope, trustedKeys: ReadonlySet<string>, newest: KnownHead | undefined, knownRootAtSeq?: Uint8Array): Admission {
  const key = formatPublisherKey(envelope.publisherKey)
  const what = describeEnvelope(envelope)
  if (!trustedKeys.has(key)) return { verdict: 'reject', code: 'untrusted-key', reason: `${what}: publisher key ${key} is not trusted for ${envelope.tree}` }
  if (newest === undefined || envelope.seq > newest.seq) return { verdict: 'accept' }
  if (envelope.seq === newest.seq) {
    return idsEqual(envelope.rootHash, newest.rootHash)
      ? { verdict: 'duplicate' }
      : { verdict: 'reject', code: 'equivocation', reason: `${what}: a different version with the same seq ${envelope.seq} is already known (equivocation or forgery)` }
  }
  if (knownRootAtSeq !== undefined && idsEqual(knownRootAtSeq, envelope.rootHash)) {
    return { verdict: 'reject', code: 'replay', reason: `${what}: replay of an older version (newest known is seq ${newest.seq})` }
  }
  return { verdict: 'reject', code: 'rollback', reason: `${what}: seq rollback below the newest known seq ${newest.seq}` }
}

/** The reason an envelope that failed openEnvelope() is counted under. */
export function rejectReasonOf (err: unknown): RejectReason {
  return err instanceof BadSignatureError ? 'bad-signature' : 'malformed'
}

/** Per-reason counts of refused versions, for `status`. */
export class RejectionCounters {
  private readonly counts = new Map<RejectReason, number>()

  count (reason: RejectReason): void {
    this.counts.set(reason, (this.counts.get(reason) ?? 0) + 1)
  }

  get total (): number {
    let n = 0
    for (const v of this.counts.values()) n += v
    return n
  }

  /** Every reason, zeros included, so dashboards and tests see a stable shape. */
  snapshot (): Record<RejectReason, number> {
    return Object.fromEntries(REJECT_REASONS.map(r => [r, this.counts.get(r) ?? 0])) as Record<RejectReason, number>
  }
}
