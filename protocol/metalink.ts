// What a mirror network's clients read to find a file: a metalink (the file's size and SHA-256 and every URL
// that serves exactly those bytes) and a mirrorlist (one base URL per line). Pure text building, no I/O: the
// agent's mirrors listener (agent/mirrors/) gathers the facts from the network view and the signed manifests.
//
// Two metalink formats:
// - 3.0 as MirrorManager serves it for repomd.xml (what dnf/librepo and yum read): the `mm0` namespace's
//   timestamp of the file, and `mm0:alternates` (earlier contents of the file, with their hashes, so a client
//   that got the file from a mirror still on an older version can tell it is a genuine one);
// - 4.0, RFC 5854 (`application/metalink4+xml`): size, `sha-256` hash, urls with `location` and `priority`.

export interface FileFacts {
  size: number
  /** SHA-256 of the whole file, 64 lower-case hex digits. */
  sha256: string
  /** The file's mtime, whole seconds since the epoch (MirrorManager's `mm0:timestamp`). */
  timestampS: number
}

export interface MirrorUrl {
  /** The file's full URL at this mirror. */
  url: string
  /** ISO 3166-1 alpha-2 country code, upper case. */
  location?: string
  /** 1–100, higher first (metalink 3.0's `preference`). */
  preference: number
}

export interface MetalinkInput {
  /** The file's name: the last component of its path. */
  name: string
  file: FileFacts
  /** Other contents the file had in older versions, newest first. */
  alternates: FileFacts[]
  /** In the order a client should try them. */
  urls: MirrorUrl[]
  generatedAtMs: number
  generator: string
}

export const METALINK3_CONTENT_TYPE = 'application/metalink+xml'
export const METALINK4_CONTENT_TYPE = 'application/metalink4+xml'

/** Text and attribute values, escaped for XML (names and URLs come from peers and paths). */
export function xmlEscape (s: string): string {
  return s.replace(/[&<>"']/g, c => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' })[c] as string)
}

function protocolOf (url: string): string {
  return url.slice(0, url.indexOf(':')).toLowerCase()
}

function details3 (f: FileFacts, indent: string): string {
  return `${indent}<mm0:timestamp>${f.timestampS}</mm0:timestamp>\n` +
    `${indent}<size>${f.size}</size>\n` +
    `${indent}<verification>\n` +
    `${indent} <hash type="sha256">${f.sha256}</hash>\n` +
    `${indent}</verification>\n`
}

/** Metalink 3.0 in MirrorManager's layout (header, one file, alternates, resources). */
export function metalink3 (m: MetalinkInput): string {
  const pubdate = new Date(m.generatedAtMs).toUTCString()
  let doc = '<?xml version="1.0" encoding="utf-8"?>\n' +
    `<metalink version="3.0" xmlns="http://www.metalinker.org/" type="dynamic" pubdate="${pubdate}" generator="${xmlEscape(m.generator)}" xmlns:mm0="http://fedorahosted.org/mirrormanager">\n` +
    ' <files>\n' +
    `  <file name="${xmlEscape(m.name)}">\n` +
    details3(m.file, '   ')
  if (m.alternates.length > 0) {
    doc += '   <mm0:alternates>\n'
    for (const a of m.alternates) doc += '    <mm0:alternate>\n' + details3(a, '      ') + '    </mm0:alternate>\n'
    doc += '   </mm0:alternates>\n'
  }
  doc += '   <resources maxconnections="1">\n'
  for (const u of m.urls) {
    const protocol = protocolOf(u.url)
    const location = u.location === undefined ? '' : ` location="${xmlEscape(u.location)}"`
    doc += `    <url protocol="${protocol}" type="${protocol}"${location} preference="${u.preference}">${xmlEscape(u.url)}</url>\n`
  }
  return doc + '   </resources>\n  </file>\n </files>\n</metalink>\n'
}

/** Metalink 4.0 (RFC 5854): priority 1 is the first url to try; location in lower case as in the RFC's examples. */
export function metalink4 (m: MetalinkInput): string {
  const published = new Date(m.generatedAtMs).toISOString().replace(/\.\d{3}Z$/, 'Z')
  let doc = '<?xml version="1.0" encoding="UTF-8"?>\n' +
    '<metalink xmlns="urn:ietf:params:xml:ns:metalink">\n' +
    `  <generator>${xmlEscape(m.generator)}</generator>\n` +
    `  <published>${published}</published>\n` +
    `  <file name="${xmlEscape(m.name)}">\n` +
    `    <size>${m.file.size}</size>\n` +
    `    <hash type="sha-256">${m.file.sha256}</hash>\n`
  m.urls.forEach((u, i) => {
    const location = u.location === undefined ? '' : ` location="${xmlEscape(u.location.toLowerCase())}"`
    doc += `    <url${location} priority="${i + 1}">${xmlEscape(u.url)}</url>\n`
  })
  return doc + '  </file>\n</metalink>\n'
}

/** A mirrorlist: a comment line saying what it lists, then one base URL per line. */
export function mirrorlist (tree: string, seq: number, baseUrls: string[]): string {
  return `# tree = ${tree.replace(/[\r\n]/g, ' ')} version = ${seq}\n` + baseUrls.map(u => `${u}\n`).join('')
}

/**
 * The order a client should try mirrors in: higher preference first, then those in the client's country, then
 * by name (stable, so two requests get the same answer).
 */
export function orderMirrors<T extends { preference: number, location?: string, name: string }> (mirrors: readonly T[], country?: string): T[] {
  const inCountry = (m: T): number => country !== undefined && m.location === country ? 0 : 1
  return [...mirrors].sort((a, b) => b.preference - a.preference || inCountry(a) - inCountry(b) || a.name.localeCompare(b.name))
}

/**
 * A file's URL under a mirror's base URL: each byte of the path outside RFC 3986's unreserved characters and
 * '/' is percent-encoded, so a name with spaces, '#', '?' or bytes that are not UTF-8 reaches the right file.
 */
export function fileUrl (base: string, pathBytes: Uint8Array): string {
  let encoded = ''
  for (const b of pathBytes) {
    const c = String.fromCharCode(b)
    encoded += /[A-Za-z0-9\-._~/]/.test(c) ? c : `%${b.toString(16).toUpperCase().padStart(2, '0')}`
  }
  return `${base.replace(/\/+$/, '')}/${encoded}`
}

/** A site as the metalink sees it: the version its served path shows, and its [[serve]] URLs for the tree. */
export interface MirrorSite {
  name: string
  /** The version its subscription path (what its web server serves) points at; undefined: none yet. */
  servedSeq?: number
  serves: ReadonlyArray<{ url: string, location?: string, preference: number }>
}

export interface SelectedMirror { name: string, baseUrl: string, location?: string, preference: number, seq: number }

/**
 * The base URLs that serve the wanted bytes: those of every site whose served version `accepts` (the newest,
 * or an older one in which the file is byte-identical), in the order of orderMirrors.
 */
export function selectMirrors (sites: readonly MirrorSite[], accepts: (seq: number) => boolean, country?: string): SelectedMirror[] {
  const chosen: SelectedMirror[] = []
  for (const site of sites) {
    if (site.servedSeq === undefined || !accepts(site.servedSeq)) continue
    for (const s of site.serves) chosen.push({ name: site.name, baseUrl: s.url, location: s.location, preference: s.preference, seq: site.servedSeq })
  }
  return orderMirrors(chosen, country)
}
