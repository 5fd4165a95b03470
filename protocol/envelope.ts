import { createPublicKey, sign, verify, type KeyObject } from 'node:crypto'
import { BadSignatureError, InvalidMessageError, LimitExceededError } from './errors.js'
import { CHUNK_ID_BYTES, MAX_ENVELOPE_BYTES, MAX_LABEL_BYTES, MAX_ROOT_BYTES } from './limits.js'
import { decodeUntrusted, encodeCanonical, expectBytes, expectInt, expectString, expectTuple } from './codec.js'
import { validateTreeName } from './paths.js'
import { toHex } from './chunk-id.js'

const ENVELOPE_TAG = 'deltamesh/envelope'
const FORMAT_VERSION = 1
const ED25519_PUBLIC_KEY_BYTES = 32
const ED25519_SIGNATURE_BYTES = 64
// DER SubjectPublicKeyInfo prefix of an ed25519 key (RFC 8410): lets node:crypto take a raw 32-byte key.
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex')
const PUBLISHER_KEY_PREFIX = 'ed25519:'

/** What a publisher signs for one version of a tree. */
export interface EnvelopeFields {
  tree: string
  seq: number
  label: string
  createdAtMs: number
  /** SHA-256 of the root blob (see manifest.ts encodeRoot). */
  rootHash: Uint8Array
  rootSize: number
  /** Raw 32-byte ed25519 public key of the publisher. */
  publisherKey: Uint8Array
}

export interface Envelope extends EnvelopeFields {
  signature: Uint8Array
  /** The exact encoded envelope: what is stored, gossiped and re-verified. */
  bytes: Uint8Array
}

function encodePayload (f: EnvelopeFields): Uint8Array {
  return encodeCanonical([ENVELOPE_TAG, FORMAT_VERSION, f.tree, f.seq, f.label, f.createdAtMs, f.rootHash, f.rootSize, f.publisherKey])
}

export function signEnvelope (fields: EnvelopeFields, privateKey: KeyObject): Envelope {
  validateFields(fields)
  const payload = encodePayload(fields)
  const signature = sign(null, payload, privateKey)
  if (!rawPublicKeyOf(privateKey).equals(Buffer.from(fields.publisherKey))) {
    throw new InvalidMessageError('publisherKey does not belong to the signing key')
  }
  const bytes = encodeCanonical([payload, signature])
  return { ...fields, signature, bytes }
}

function validateFields (f: EnvelopeFields): void {
  validateTreeName(f.tree)
  expectInt(f.seq, 'envelope seq', 1, Number.MAX_SAFE_INTEGER)
  expectString(f.label, 'envelope label', MAX_LABEL_BYTES)
  expectInt(f.createdAtMs, 'envelope createdAt', 0, Number.MAX_SAFE_INTEGER)
  expectBytes(f.rootHash, 'envelope rootHash', CHUNK_ID_BYTES)
  expectInt(f.rootSize, 'envelope rootSize', 1, MAX_ROOT_BYTES)
  expectBytes(f.publisherKey, 'envelope publisherKey', ED25519_PUBLIC_KEY_BYTES)
}

/**
 * Decodes untrusted envelope bytes and verifies the signature against the key inside it.
 * Whether that key is trusted for the tree is the caller's question (the trust list is configuration).
 */
export function openEnvelope (bytes: Uint8Array): Envelope {
  if (bytes.byteLength > MAX_ENVELOPE_BYTES) throw new LimitExceededError('envelope size', bytes.byteLength, MAX_ENVELOPE_BYTES)
  const outer = decodeUntrusted(bytes, 'envelope')
  if (!Array.isArray(outer) || outer.length !== 2) throw new InvalidMessageError('envelope: not [payload, signature]')
  const payload = expectBytes(outer[0], 'envelope payload', undefined, MAX_ENVELOPE_BYTES)
  const signature = expectBytes(outer[1], 'envelope signature', ED25519_SIGNATURE_BYTES)
  const t = expectTuple(decodeUntrusted(payload, 'envelope payload'), 'envelope payload', ENVELOPE_TAG, FORMAT_VERSION, 9)
  const fields: EnvelopeFields = {
    tree: validateTreeName(t[2]),
    seq: expectInt(t[3], 'envelope seq', 1, Number.MAX_SAFE_INTEGER),
    label: expectString(t[4], 'envelope label', MAX_LABEL_BYTES),
    createdAtMs: expectInt(t[5], 'envelope createdAt', 0, Number.MAX_SAFE_INTEGER),
    rootHash: expectBytes(t[6], 'envelope rootHash', CHUNK_ID_BYTES),
    rootSize: expectInt(t[7], 'envelope rootSize', 1, MAX_ROOT_BYTES),
    publisherKey: expectBytes(t[8], 'envelope publisherKey', ED25519_PUBLIC_KEY_BYTES),
  }
  // Re-encoding must give the signed bytes back: a non-canonical payload is refused, so one version has one encoding.
  if (Buffer.compare(encodePayload(fields), payload) !== 0) throw new InvalidMessageError('envelope payload is not canonically encoded')
  if (!verify(null, payload, publicKeyFromRaw(fields.publisherKey), signature)) throw new BadSignatureError(`Envelope for ${fields.tree} seq ${fields.seq} has a bad signature`)
  return { ...fields, signature, bytes }
}

export function publicKeyFromRaw (raw: Uint8Array): KeyObject {
  return createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, raw]), format: 'der', type: 'spki' })
}

export function rawPublicKeyOf (key: KeyObject): Buffer {
  const publicKey = key.type === 'private' ? createPublicKey(key) : key
  const der = publicKey.export({ format: 'der', type: 'spki' })
  return der.subarray(der.byteLength - ED25519_PUBLIC_KEY_BYTES)
}

/** Operator-facing text form of a publisher key: 'ed25519:' + base64url. */
export function formatPublisherKey (raw: Uint8Array): string {
  return PUBLISHER_KEY_PREFIX + Buffer.from(raw).toString('base64url')
}

export function parsePublisherKey (text: string): Uint8Array {
  if (!text.startsWith(PUBLISHER_KEY_PREFIX)) throw new InvalidMessageError(`Publisher key must start with '${PUBLISHER_KEY_PREFIX}'`)
  const raw = Buffer.from(text.slice(PUBLISHER_KEY_PREFIX.length), 'base64url')
  if (raw.byteLength !== ED25519_PUBLIC_KEY_BYTES || formatPublisherKey(raw) !== text) throw new InvalidMessageError('Publisher key is not 32 bytes of base64url')
  return raw
}

/** Short human identifier of a version, for logs. */
export function describeEnvelope (e: EnvelopeFields): string {
  return `${e.tree}@${e.seq} (${toHex(e.rootHash).slice(0, 12)})`
}
