import { Packr, Unpackr } from 'msgpackr'
import { InvalidMessageError } from './errors.js'

// Canonical msgpack: every structure we encode is an array of primitives and byte strings, never a map,
// so there is no key order to vary; msgpackr picks the smallest encoding for each integer, so the same
// values always give the same bytes.
const packr = new Packr({ useRecords: false, moreTypes: false, bundleStrings: false })

// Maps decode as Map (no prototype tricks on plain objects); records are off; everything decoded is
// `unknown` until a validator turns it into a domain type.
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: false, moreTypes: false, int64AsType: 'number' })

export function encodeCanonical (value: unknown[]): Uint8Array {
  return packr.pack(value)
}

/** Decodes exactly one msgpack value that must fill `bytes`; anything else is an InvalidMessageError. */
export function decodeUntrusted (bytes: Uint8Array, what: string): unknown {
  let value: unknown
  try {
    const values: unknown[] = []
    unpackr.unpackMultiple(bytes, (v: unknown) => { values.push(v); return values.length < 2 })
    if (values.length !== 1) throw new Error(`${values.length} values`)
    value = values[0]
  } catch (err) {
    if (err instanceof InvalidMessageError) throw err
    throw new InvalidMessageError(`Cannot decode ${what}: ${(err as Error).message}`, { cause: err })
  }
  return value
}

/** An array of exactly `length` elements whose first element is `tag` and second `version`. */
export function expectTuple (value: unknown, what: string, tag: string, version: number, length: number): unknown[] {
  if (!Array.isArray(value)) throw new InvalidMessageError(`${what}: not an array`)
  if (value[0] !== tag) throw new InvalidMessageError(`${what}: wrong tag ${JSON.stringify(String(value[0]).slice(0, 40))}`)
  if (value[1] !== version) throw new InvalidMessageError(`${what}: unsupported version ${String(value[1]).slice(0, 20)}`)
  if (value.length !== length) throw new InvalidMessageError(`${what}: ${value.length} fields, expected ${length}`)
  return value
}

export function expectInt (value: unknown, what: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value)) throw new InvalidMessageError(`${what}: not an integer`)
  if (value < min || value > max) throw new InvalidMessageError(`${what}: ${value} outside [${min}, ${max}]`)
  return value
}

export function expectBytes (value: unknown, what: string, length?: number, maxLength = Infinity): Uint8Array {
  if (!(value instanceof Uint8Array)) throw new InvalidMessageError(`${what}: not a byte string`)
  if (length !== undefined && value.byteLength !== length) throw new InvalidMessageError(`${what}: ${value.byteLength} bytes, expected ${length}`)
  if (value.byteLength > maxLength) throw new InvalidMessageError(`${what}: ${value.byteLength} bytes, limit ${maxLength}`)
  return value
}

export function expectString (value: unknown, what: string, maxBytes: number): string {
  if (typeof value !== 'string') throw new InvalidMessageError(`${what}: not a string`)
  if (Buffer.byteLength(value) > maxBytes) throw new InvalidMessageError(`${what}: longer than ${maxBytes} bytes`)
  return value
}

// Unsigned LEB128 varints frame the records of a manifest stream.

export function encodeUvarint (n: number): Uint8Array {
  const out: number[] = []
  while (n >= 0x80) { out.push((n % 0x80) | 0x80); n = Math.floor(n / 0x80) }
  out.push(n)
  return Uint8Array.from(out)
}

/** Returns [value, bytesRead], or undefined when `bytes` ends inside the varint. Rejects > 2^53 and overlong forms. */
export function decodeUvarint (bytes: Uint8Array, offset: number): [number, number] | undefined {
  let value = 0
  let scale = 1
  for (let i = 0; i < 8; i++) {
    if (offset + i >= bytes.length) return undefined
    const b = bytes[offset + i] as number
    value += (b & 0x7f) * scale
    if ((b & 0x80) === 0) {
      if (b === 0 && i > 0) throw new InvalidMessageError('Overlong varint')
      return [value, i + 1]
    }
    scale *= 0x80
  }
  throw new InvalidMessageError('Varint longer than 8 bytes')
}
