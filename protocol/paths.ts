import { InvalidPathError, InvalidTreeNameError } from './errors.js'
import { MAX_NAME_BYTES, MAX_PATH_BYTES, MAX_TREE_NAME_BYTES } from './limits.js'

// A rescan validates every name of the tree: byte lengths are counted without encoding, and a lone surrogate
// (the only string that does not survive a UTF-8 round trip) is found by a regex — with the u flag a class of
// surrogates matches only unpaired ones. Three allocations per path were a visible part of a rescan's CPU.
const LONE_SURROGATE = /[\uD800-\uDFFF]/u

/**
 * Checks that `path` is a clean, relative, '/'-separated path that stays inside its tree:
 * no leading '/', no '.', '..' or empty segments, no NUL or backslash, no control characters,
 * valid UTF-8 round-trip (no lone surrogates), bounded lengths. Returns it unchanged.
 * A manifest or peer that sends anything else is hostile or broken; we never "normalise" it
 * into something else, because two different wire paths must never land on the same file.
 */
export function validateRelativePath (path: unknown): string {
  if (typeof path !== 'string') throw new InvalidPathError(String(path), 'not a string')
  if (path.length === 0) throw new InvalidPathError(path, 'empty')
  // a UTF-16 code unit is at most 3 UTF-8 bytes: only a long string needs its bytes counted
  if (path.length * 3 > MAX_PATH_BYTES && Buffer.byteLength(path, 'utf8') > MAX_PATH_BYTES) throw new InvalidPathError(path, `longer than ${MAX_PATH_BYTES} bytes`)
  if (LONE_SURROGATE.test(path)) throw new InvalidPathError(path, 'not valid Unicode')
  if (path.startsWith('/')) throw new InvalidPathError(path, 'absolute')
  // control characters (incl. NUL, newline) and backslashes have no business in a mirrored tree name
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f\\]/.test(path)) throw new InvalidPathError(path, 'contains a control character or backslash')
  // segments walked in place (no split: this runs for every entry of every manifest read)
  for (let start = 0; start <= path.length;) {
    let end = path.indexOf('/', start)
    if (end === -1) end = path.length
    const length = end - start
    if (length === 0) throw new InvalidPathError(path, 'empty segment')
    if (length <= 2 && path.charCodeAt(start) === 0x2e && (length === 1 || path.charCodeAt(start + 1) === 0x2e)) {
      throw new InvalidPathError(path, `'${path.slice(start, end)}' segment`)
    }
    if (length * 3 > MAX_NAME_BYTES && Buffer.byteLength(path.slice(start, end), 'utf8') > MAX_NAME_BYTES) {
      throw new InvalidPathError(path, `a segment is longer than ${MAX_NAME_BYTES} bytes`)
    }
    start = end + 1
  }
  return path
}

/** Parent directory of a relative path, or '' for a top-level name. */
export function parentOf (path: string): string {
  const slash = path.lastIndexOf('/')
  return slash === -1 ? '' : path.slice(0, slash)
}

/**
 * Canonical manifest order: component-wise, each component compared as UTF-8 bytes.
 * This is the order of a depth-first walk that visits each directory's names sorted by bytes,
 * so a scanner can emit entries in order without holding the whole tree, and a directory
 * always sorts before everything under it.
 */
export function comparePaths (a: string, b: string): number {
  // Below U+D800 a UTF-16 code unit is its code point, and UTF-8 keeps code point order: the first differing
  // unit decides, with '/' as NUL. A surrogate or a unit above them (whose UTF-16 order differs from
  // UTF-8's) leaves it to the bytes. Most paths never get there, and no buffer is made for them.
  const n = Math.min(a.length, b.length)
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i)
    let y = b.charCodeAt(i)
    if (x === y) continue
    if (x >= 0xd800 || y >= 0xd800) return Buffer.compare(sortKey(a), sortKey(b))
    if (x === 0x2f) x = 0
    if (y === 0x2f) y = 0
    if (x !== y) return x < y ? -1 : 1
  }
  if (a.length === b.length) return 0
  // one is a prefix of the other, so are its bytes — unless it ends in half a surrogate pair (the bytes of a
  // lone surrogate are U+FFFD's, not a prefix of the pair's)
  const last = Math.min(a.length, b.length) - 1
  if (last >= 0 && a.charCodeAt(last) >= 0xd800) return Buffer.compare(sortKey(a), sortKey(b))
  return a.length < b.length ? -1 : 1
}

/** '/' → NUL makes plain byte order equal component-wise order (NUL never occurs in a valid path). */
export function sortKey (path: string): Buffer {
  const bytes = Buffer.from(path, 'utf8')
  for (let i = 0; i < bytes.length; i++) if (bytes[i] === 0x2f) bytes[i] = 0
  return bytes
}

/** Tree names: 'rhel-10/compose/BaseOS' — segments of [A-Za-z0-9._-], not '.' or '..'. */
export function validateTreeName (tree: unknown): string {
  if (typeof tree !== 'string') throw new InvalidTreeNameError(String(tree), 'not a string')
  if (tree.length === 0) throw new InvalidTreeNameError(tree, 'empty')
  if (tree.length > MAX_TREE_NAME_BYTES) throw new InvalidTreeNameError(tree, `longer than ${MAX_TREE_NAME_BYTES} characters`)
  for (const segment of tree.split('/')) {
    if (!/^[A-Za-z0-9._-]+$/.test(segment)) throw new InvalidTreeNameError(tree, 'segments must be non-empty and use only A-Z a-z 0-9 . _ -')
    if (segment === '.' || segment === '..') throw new InvalidTreeNameError(tree, `'${segment}' segment`)
  }
  return tree
}

/** A tree name as one filesystem-safe directory name ('/' is not allowed in names; '%' is not allowed in tree names). */
export function treeDirName (tree: string): string {
  return validateTreeName(tree).replaceAll('/', '%')
}
