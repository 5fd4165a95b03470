// The answers of the mirrors listener, from the live network view and this site's signed manifests:
// /metalink?tree=T&path=P[&format=metalink4][&country=CC] and /mirrorlist?tree=T[&country=CC].
// A site is listed for a file when the version its web server serves (its subscription path's current
// version) is the newest, or an older one in which this file has exactly the newest bytes (same chunks):
// a stale mirror still serves an unchanged file, and never a changed one.
import { validateRelativePath, validateTreeName, pathToBytes } from '../../protocol/paths.js'
import { fileUrl, metalink3, metalink4, METALINK3_CONTENT_TYPE, METALINK4_CONTENT_TYPE, mirrorlist, selectMirrors, type FileFacts, type MirrorSite } from '../../protocol/metalink.js'
import type { SiteStatus } from '../../protocol/site-status.js'
import { sameContent, type FileFactsSource, type VersionRef } from './file-facts.js'
import type { FileEntry } from '../../protocol/manifest.js'

/** Older contents listed as mm0:alternates (MirrorManager keeps a few days' worth; retention keeps 3 versions). */
export const MAX_ALTERNATES = 8

export interface Answer { status: number, contentType: string, body: string }

/** A site of the network view: its name, whether its status is fresh, and that status. */
export interface ViewSite { name: string, fresh: boolean, status?: SiteStatus }

export interface AnswerComponents {
  facts: FileFactsSource
  /** Every site of the network view, this one included. */
  sites: () => Promise<ViewSite[]>
  generator: string
  now?: () => number
}

const TEXT = 'text/plain; charset=utf-8'
const reply = (status: number, line: string): Answer => ({ status, contentType: TEXT, body: `${line.replace(/[\r\n]+/g, ' ')}\n` })

/** A query's parameters, checked: 400 with the reason for anything malformed. */
function params (query: URLSearchParams, needPath: boolean): { tree: string, path?: string, country?: string, format: 'metalink3' | 'metalink4' } | Answer {
  const tree = query.get('tree')
  if (tree === null) return reply(400, 'missing tree= (e.g. ?tree=rhel-10/compose/BaseOS)')
  try { validateTreeName(tree) } catch (err) { return reply(400, `tree=: ${(err as Error).message}`) }
  const path = query.get('path') ?? undefined
  if (needPath) {
    if (path === undefined) return reply(400, 'missing path= (a file of the tree, e.g. &path=repodata/repomd.xml)')
    try { validateRelativePath(path) } catch (err) { return reply(400, `path=: ${(err as Error).message}`) }
  }
  const country = query.get('country')?.toUpperCase() ?? undefined
  if (country !== undefined && !/^[A-Z]{2}$/.test(country)) return reply(400, 'country=: a two-letter country code such as CZ')
  const format = query.get('format') ?? 'metalink3'
  if (format !== 'metalink3' && format !== 'metalink4') return reply(400, 'format=: metalink3 (the default) or metalink4')
  return { tree, path, country, format }
}

/** The sites of the view with a fresh status, as the metalink sees them for `tree`. */
function mirrorSites (sites: ViewSite[], tree: string): MirrorSite[] {
  return sites.filter(s => s.fresh && s.status !== undefined).map(s => {
    const status = s.status as SiteStatus
    return {
      name: s.name,
      servedSeq: status.trees.find(t => t.name === tree)?.currentSeq,
      serves: (status.serves ?? []).filter(v => v.tree === tree),
    }
  })
}

export async function answerMirrorlist (c: AnswerComponents, query: URLSearchParams): Promise<Answer> {
  const p = params(query, false)
  if ('status' in p) return p
  const sites = await c.sites()
  // the newest version any fresh site knows of (this site's own status says what was admitted here)
  const newest = Math.max(0, ...sites.filter(s => s.fresh).flatMap(s => s.status?.trees.filter(t => t.name === p.tree).map(t => t.newestSeq ?? t.currentSeq ?? 0) ?? []))
  if (newest === 0) return reply(404, `tree ${p.tree}: no version known on this network`)
  const chosen = selectMirrors(mirrorSites(sites, p.tree), seq => seq === newest, p.country)
  if (chosen.length === 0) return reply(404, `tree ${p.tree}: no site serves version ${newest} over HTTP yet`)
  return { status: 200, contentType: TEXT, body: mirrorlist(p.tree, newest, chosen.map(m => m.baseUrl)) }
}

export async function answerMetalink (c: AnswerComponents, query: URLSearchParams, signal?: AbortSignal): Promise<Answer> {
  const p = params(query, true)
  if ('status' in p) return p
  const path = p.path as string
  const versions = await c.facts.versions(p.tree)
  if (versions.length === 0) return reply(404, `tree ${p.tree}: not known here`)
  const found = await newestEntry(c.facts, p.tree, path, versions, signal)
  if ('status' in found) return found
  const { version, entry } = found
  const file = await c.facts.facts(entry, signal)
  if (file === undefined) return reply(404, `${p.tree} version ${version.seq}: this site holds no copy of ${path} to hash (ask a site that mirrors the whole tree)`)
  const identical = new Set<number>([version.seq])
  const alternates: FileFacts[] = []
  for (const v of versions) {
    if (v.seq >= version.seq) continue
    const older = await c.facts.lookup(p.tree, v.seq, path, signal)
    if (older.kind !== 'file') continue
    if (sameContent(older.entry, entry)) { identical.add(v.seq); continue }
    if (alternates.length >= MAX_ALTERNATES) continue
    const facts = await c.facts.facts(older.entry, signal)
    if (facts !== undefined && facts.sha256 !== file.sha256 && !alternates.some(a => a.sha256 === facts.sha256)) alternates.push(facts)
  }
  const chosen = selectMirrors(mirrorSites(await c.sites(), p.tree), seq => identical.has(seq), p.country)
  if (chosen.length === 0) return reply(404, `${p.tree} version ${version.seq}: no site serves ${path} over HTTP yet`)
  const bytes = pathToBytes(path)
  const input = {
    name: path.slice(path.lastIndexOf('/') + 1),
    file,
    alternates,
    urls: chosen.map(m => ({ url: fileUrl(m.baseUrl, bytes), location: m.location, preference: m.preference })),
    generatedAtMs: (c.now ?? Date.now)(),
    generator: c.generator,
  }
  return p.format === 'metalink4'
    ? { status: 200, contentType: METALINK4_CONTENT_TYPE, body: metalink4(input) }
    : { status: 200, contentType: METALINK3_CONTENT_TYPE, body: metalink3(input) }
}

/** The file in the newest version whose manifest is here; 404 when that version has no such file. */
async function newestEntry (facts: FileFactsSource, tree: string, path: string, versions: VersionRef[], signal?: AbortSignal): Promise<{ version: VersionRef, entry: FileEntry } | Answer> {
  for (const version of versions) {
    const found = await facts.lookup(tree, version.seq, path, signal)
    if (found.kind === 'no-manifest') continue
    if (found.kind === 'absent') return reply(404, `${tree} version ${version.seq}: no ${path}`)
    if (found.kind === 'other') return reply(404, `${tree} version ${version.seq}: ${path} is a ${found.type === 'dir' ? 'directory' : 'symlink'}, not a file`)
    return { version, entry: found.entry }
  }
  return reply(404, `tree ${tree}: no manifest of any version is here yet`)
}
