import { appendFile, readFile, writeFile } from 'node:fs/promises'
import { parse as parseToml, TomlError } from 'smol-toml'
import { z } from 'zod'
import { parsePublisherKey } from '../../protocol/envelope.js'
import { validateTreeName } from '../../protocol/paths.js'
import { DeltameshError } from '../../protocol/errors.js'
import { parseRate } from './rate.js'
import { parseDays, parseHours } from './schedule.js'
import { CHUNK_SIZE_NAMES } from '../../protocol/chunking.js'
import { isServeUrl, MAX_SERVE_PREFERENCE, MAX_STATUS_SERVES } from '../../protocol/site-status.js'
import { parseDuration } from './duration.js'

/** A config file that does not parse or does not validate: names the file, the key and what was expected. */
export class ConfigError extends DeltameshError {
  static override name = 'ConfigError'
  constructor (readonly file: string, readonly key: string, readonly expected: string) {
    super(`${file}: ${key === '' ? '' : `${key}: `}${expected}`)
    this.name = 'ConfigError'
  }
}

const multiaddr = z.string().regex(/^\/(ip4|ip6|dns|dns4|dns6)\/[^/]+\/tcp\/\d+(\/p2p\/[1-9A-HJ-NP-Za-km-z]+)?$/, 'a TCP multiaddr such as /ip4/192.0.2.7/tcp/4101/p2p/12D3KooW…')
const peerAddr = z.string().regex(/\/p2p\/[1-9A-HJ-NP-Za-km-z]+$/, 'a multiaddr ending in /p2p/<peer id> (copy it from `deltamesh init` on that site)')
/** A site that only dials out (`listen = []`) is listed by its peer id alone: accepted when it dials us, never dialled. */
const peerDialable = z.string().regex(/^(\/(ip4|ip6|dns|dns4|dns6)\/[^/]+\/tcp\/\d+)?\/p2p\/[1-9A-HJ-NP-Za-km-z]+$/, 'a TCP multiaddr such as /ip4/192.0.2.7/tcp/4101/p2p/12D3KooW…, or /p2p/12D3KooW… alone for a site that only dials out')
const treeName = z.string().refine(t => { try { validateTreeName(t); return true } catch { return false } }, 'a tree name of segments [A-Za-z0-9._-] joined by /')
const publisherKey = z.string().refine(k => { try { parsePublisherKey(k); return true } catch { return false } }, "a publisher key 'ed25519:…' (printed by `deltamesh init`)")

const rate = z.string().refine(r => { try { parseRate(r); return true } catch { return false } }, "a rate such as '10MB/s', '80Mbit/s' or 'unlimited'")

const scheduleWindow = z.object({
  days: z.string().refine(d => { try { parseDays(d); return true } catch { return false } }, 'day names such as "Mon-Fri", "Sat,Sun", "daily", "weekdays" or "weekends"').default('daily'),
  hours: z.string().refine(h => { try { parseHours(h); return true } catch { return false } }, 'hours "HH:MM-HH:MM" in local time, e.g. "08:00-18:00" (may run past midnight: "22:00-06:00")'),
  up: rate.optional(),
  down: rate.optional(),
}).strict()

const linkName = z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'a link name of 1–64 characters [A-Za-z0-9._-]')
/** A [[peers]] name or a peer id (12D3KooW…). */
const peerRef = z.string().min(1).max(100)

const dashboardListen = z.string().regex(/^(\[[0-9a-fA-F:.]+\]|[0-9.]+|localhost):(\d{1,5})$/, "HOST:PORT such as '127.0.0.1:7180' (an IP address or localhost; port 0 picks a free one)")
  .refine(l => Number(l.slice(l.lastIndexOf(':') + 1)) <= 65535, 'a port of at most 65535')

const serveUrl = z.string().refine(isServeUrl, 'an http:// or https:// base URL of at most 512 bytes, without spaces, quotes, <, >, a query or a fragment, e.g. "https://mirror.example.org/BaseOS"')

const duration = (max: string): z.ZodType<string> => z.string().refine(d => { try { return parseDuration(d) > 0 && parseDuration(d) <= parseDuration(max) } catch { return false } }, `a duration such as "5s", "500ms" or "5m", at most ${max}`)
/** {date}, {time} and {seq} (agent/publish/publish-schedule.ts checks them again when it expands one). */
const labelTemplate = z.string().max(200).regex(/^([^{}]|\{(date|time|seq)\})*$/, 'a label with {date}, {time} or {seq} as its only placeholders, e.g. "nightly-{date}.{seq}"')

/** The dashboard's default: loopback only, a port of its own next to the default libp2p port 4101. */
export const DEFAULT_DASHBOARD_LISTEN = '127.0.0.1:7180'

const configSchema = z.object({
  agent: z.object({
    /** Site name shown on every site's dashboard (default: the host name). */
    name: z.string().min(1).max(100).optional(),
    listen: z.array(multiaddr).default(['/ip4/0.0.0.0/tcp/4101']),
    /** Addresses to announce to peers when listening on 0.0.0.0 is not what they should dial. */
    announce: z.array(multiaddr).default([]),
    /** How long a peer that exhausted its misbehaviour budget is refused (doubles on each repeat). */
    banSeconds: z.number().int().min(1).max(86400).default(600),
  }).strict().default({ listen: ['/ip4/0.0.0.0/tcp/4101'], announce: [], banSeconds: 600 }),
  dashboard: z.object({
    enabled: z.boolean().default(true),
    listen: dashboardListen.default(DEFAULT_DASHBOARD_LISTEN),
    /** How often this site gossips its status to the others (also when its own dashboard is off). */
    statusIntervalMs: z.number().int().min(250).max(600_000).default(5_000),
    /** Host names answered besides loopback on any port: "name" (any port) or "name:port" (a reverse proxy's). */
    allowedHosts: z.array(z.string().regex(/^([a-zA-Z0-9.-]+|\[[0-9a-fA-F:.]+\])(:\d{1,5})?$/, 'a host name or IP, optionally :port')).max(64).default([]),
  }).strict().default({ enabled: true, listen: DEFAULT_DASHBOARD_LISTEN, statusIntervalMs: 5_000, allowedHosts: [] }),
  peers: z.array(z.object({
    addr: peerAddr.and(peerDialable),
    name: z.string().max(100).optional(),
  }).strict()).default([]),
  trust: z.array(z.object({
    tree: treeName,
    key: publisherKey,
  }).strict()).default([]),
  limits: z.object({
    /** Whole-agent caps: what we serve to all peers, and what we ask of them. */
    up: rate.default('unlimited'),
    down: rate.default('unlimited'),
    /** Time windows with other global rates; the first window that contains the local time wins. */
    schedule: z.array(scheduleWindow).default([]),
  }).strict().default({ up: 'unlimited', down: 'unlimited', schedule: [] }),
  /** Named links: the peers behind one WAN line share its limits (on top of the global ones). */
  links: z.array(z.object({
    name: linkName,
    peers: z.array(peerRef).min(1),
    up: rate.default('unlimited'),
    down: rate.default('unlimited'),
    schedule: z.array(scheduleWindow).default([]),
  }).strict()).default([]),
  fairness: z.object({
    /** Share of a busy link each tree gets relative to the others (default 1): a lab's current build before old composes. */
    treeWeights: z.record(treeName, z.number().positive().max(1000)).default({}),
  }).strict().default({ treeWeights: {} }),
  chunking: z.object({
    /** Average chunk size of the trees this agent publishes (agent/chunk/sizes.ts). */
    average: z.enum(CHUNK_SIZE_NAMES).default('52KiB'),
    /** Per tree, e.g. "32KiB". Set before a tree's first publish. */
    trees: z.record(treeName, z.enum(CHUNK_SIZE_NAMES)).default({}),
  }).strict().default({ average: '52KiB', trees: {} }),
  mirror: z.object({
    /** Who may read the materialized versions (agent/mirror-access.ts): everyone, one group, or the agent's user only. */
    mode: z.enum(['world', 'group', 'private']).default('world'),
    /** With mode = "group": the group that may read them (a name or a numeric gid), e.g. the web server's. */
    group: z.string().regex(/^([A-Za-z_][A-Za-z0-9_.-]{0,31}\$?|\d{1,10})$/, 'a group name such as "www-data" or a numeric gid').optional(),
  }).strict().default({ mode: 'world' }),
  /** Where this site publishes the trees it mirrors over HTTP(S): gossiped in its status, listed in metalinks. */
  serve: z.array(z.object({
    tree: treeName,
    url: serveUrl,
    /** ISO 3166-1 alpha-2 country code of the server (a client's country= puts its own country's first). */
    location: z.string().regex(/^[A-Za-z]{2}$/, 'a two-letter country code such as "CZ"').transform(c => c.toUpperCase()).optional(),
    preference: z.number().int().min(1).max(MAX_SERVE_PREFERENCE).default(MAX_SERVE_PREFERENCE),
  }).strict()).max(MAX_STATUS_SERVES).default([]),
  /** Sources this agent publishes by itself when they change (agent/daemon/watched-publish.ts). */
  publish: z.array(z.object({
    tree: treeName,
    src: z.string().min(1).regex(/^\//, 'an absolute path to the source directory'),
    watch: z.boolean().default(true),
    /** Published once nothing changed for this long… */
    quiet: duration('1h').default('5s'),
    /** …or this long after the first unpublished change, however busy the source stays. */
    maxDelay: duration('24h').default('5m'),
    label: labelTemplate.default('{date}.{seq}'),
  }).strict()).max(256).default([]),
  /** The public metalink and mirrorlist listener (agent/mirrors/): off unless `listen` is set. */
  mirrors: z.object({
    listen: dashboardListen.optional(),
    /** Requests answered per second in all (a token bucket with a burst of as many); beyond it: 429. */
    requestsPerSecond: z.number().int().min(1).max(10_000).default(20),
  }).strict().default({ requestsPerSecond: 20 }),
  sync: z.object({
    /** Chunks requested per WANT batch and outstanding bytes per peer. */
    windowBytes: z.number().int().min(65536).max(1 << 30).default(8 * 1024 * 1024),
  }).strict().default({ windowBytes: 8 * 1024 * 1024 }),
}).strict().superRefine((config, ctx) => {
  const published = new Set<string>()
  config.publish.forEach((p, i) => {
    if (published.has(p.tree)) ctx.addIssue({ code: 'custom', path: ['publish', i, 'tree'], message: `one [[publish]] per tree (${p.tree} is listed twice)` })
    published.add(p.tree)
  })
  if (config.mirror.mode === 'group' && config.mirror.group === undefined) ctx.addIssue({ code: 'custom', path: ['mirror', 'group'], message: 'a group name such as "www-data" (mode = "group" needs one)' })
  if (config.mirror.mode !== 'group' && config.mirror.group !== undefined) ctx.addIssue({ code: 'custom', path: ['mirror', 'group'], message: `no group with mode = "${config.mirror.mode}" (a group applies only to mode = "group")` })
  const names = new Set(config.peers.flatMap(p => p.name === undefined ? [] : [p.name]))
  const seenLinks = new Set<string>()
  const linkOfPeer = new Map<string, string>()
  config.links.forEach((link, i) => {
    if (seenLinks.has(link.name)) ctx.addIssue({ code: 'custom', path: ['links', i, 'name'], message: `a unique link name (${link.name} is used twice)` })
    seenLinks.add(link.name)
    link.peers.forEach((ref, j) => {
      if (!names.has(ref) && !/^(12D3Koo|Qm)[1-9A-HJ-NP-Za-km-z]+$/.test(ref)) {
        ctx.addIssue({ code: 'custom', path: ['links', i, 'peers', j], message: `the name of a [[peers]] entry or a peer id (no peer is named ${JSON.stringify(ref)})` })
      }
      const other = linkOfPeer.get(ref)
      if (other !== undefined) ctx.addIssue({ code: 'custom', path: ['links', i, 'peers', j], message: `a peer in at most one link (${ref} is also in link ${other})` })
      linkOfPeer.set(ref, link.name)
    })
  })
})

export type AgentConfig = z.infer<typeof configSchema>
/** config.toml as written (defaults not yet applied): what editors of the file work with. */
export type ConfigFile = z.input<typeof configSchema>

function keyOf (path: PropertyKey[]): string {
  return path.map((p, i) => typeof p === 'number' ? `[${p}]` : `${i === 0 ? '' : '.'}${String(p)}`).join('')
}

export function parseConfig (text: string, file: string): AgentConfig {
  let raw: unknown
  try {
    raw = parseToml(text)
  } catch (err) {
    if (err instanceof TomlError) throw new ConfigError(file, `line ${err.line}`, `not valid TOML: ${err.message.split('\n')[0] ?? ''}`)
    throw err
  }
  const result = configSchema.safeParse(raw)
  if (!result.success) {
    const issue = result.error.issues[0]
    if (issue === undefined) throw new ConfigError(file, '', 'invalid')
    // our own messages name what is expected ("a TCP multiaddr such as …"); zod's own already read as a sentence
    const expected = issue.code === 'unrecognized_keys'
      ? `unknown key(s) ${issue.keys.join(', ')}`
      : /^Invalid /.test(issue.message) ? issue.message.replace(/^Invalid input: /, '') : `expected ${issue.message}`
    throw new ConfigError(file, keyOf(issue.path), expected)
  }
  return result.data
}

export async function loadConfig (file: string): Promise<AgentConfig> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new ConfigError(file, '', 'no config file: run `deltamesh init --home DIR` first')
    throw err
  }
  return parseConfig(text, file)
}

function tomlString (s: string): string { return JSON.stringify(s) }

// The file `deltamesh init` writes, one section per idea: every setting at its default or commented out with an
// example, under a comment that says what it is for (this file is the first documentation an operator reads).
// Sections are joined by one blank line; only [agent] depends on the arguments.

function agentSection (listen: string[], announce: string[], name?: string): string {
  return `# deltamesh agent configuration (TOML). Written by \`deltamesh init\`; edit freely —
# commands such as \`deltamesh peers add\` and \`deltamesh trust\` append to this file and keep your comments.

[agent]
# Site name shown on every dashboard (default: this host's name).
${name === undefined ? '# name = "brisbane"' : `name = ${tomlString(name)}`}
# libp2p addresses this agent listens on. Peers dial these; use a public or site address on a real WAN.
listen = [${listen.map(tomlString).join(', ')}]
# Addresses other sites should dial, when they differ from the listen addresses (NAT, 0.0.0.0).
announce = [${announce.map(tomlString).join(', ')}]
# Seconds a peer that exceeded its misbehaviour budget (bad chunks, malformed frames) is refused; doubles on repeats.
banSeconds = 600
`
}

/** The dashboard and metrics listener, and how often this site gossips its status. */
const dashboardSection = (listen: string): string => `[dashboard]
# Web dashboard of the whole network, plus Prometheus /metrics, served by this agent. Keep it on loopback
# (reach it with an SSH tunnel or a reverse proxy); port 0 picks a free port (\`deltamesh status\` shows it).
enabled = true
listen = ${tomlString(listen)}
# How often this site looks for news in its status (versions, sync progress, peers, rates), in milliseconds:
# sent at the next tick after it changes, and at least every 6 ticks.
statusIntervalMs = 5000
# Loopback names (localhost, 127.0.0.1, [::1]) are answered on any port, so an SSH tunnel to any local port
# works; a reverse proxy's name must be listed ("name" for any port, "name:port"):
# allowedHosts = ["mirror.example.org"]
`

/** Bandwidth: global limits, their schedule, links shared by several peers, and tree weights on a busy link. */
const BANDWIDTH_SECTION = `[limits]
# Bandwidth this agent may use in total, e.g. "10MB/s", "80Mbit/s" or "unlimited".
# up: what it serves to peers; down: what it asks of them.
up = "unlimited"
down = "unlimited"

# Windows with other rates, in the agent's local time; the first that matches wins, per direction:
# [[limits.schedule]]
# days = "Mon-Fri"
# hours = "08:00-18:00"
# up = "5MB/s"
# down = "5MB/s"

# Links: the peers behind one WAN line share its limits, on top of the [limits] above. Transfers on a busy
# link are shared fairly: between the peers asking us for chunks, and between the trees we pull.
# Change limits at runtime with: deltamesh limit --home DIR --link NAME --up RATE --down RATE
# [[links]]
# name = "brisbane-wan"
# peers = ["brisbane", "brisbane-lab"]     # [[peers]] names or peer ids
# up = "20MB/s"
# down = "unlimited"
# [[links.schedule]]
# days = "Mon-Fri"
# hours = "08:00-18:00"
# up = "5MB/s"

# Trees with a larger weight get a larger share of a busy link (default 1).
# [fairness.treeWeights]
# "rhel-10/nightly" = 4
`

/** The chunk size of published trees (commented out: the default is what was measured to send the least). */
const CHUNKING_SECTION = `# Average chunk size of the trees this agent publishes: 16KiB, 32KiB, 52KiB (default) or 64KiB. The default
# sends the fewest bytes on the trees measured (package trees, ISO images, small files, source trees: chunk
# deltas carry the boundaries of changed regions); finer chunks cost 3 × the chunks. Set a tree's size before
# its first publish: a change re-sends its large files once.
# [chunking.trees]
# "isos/nightly" = "32KiB"
`

/** Who may read the materialized versions. */
const MIRROR_SECTION = `[mirror]
# Who may read the versions this agent materializes (the subscription paths, for httpd or nginx):
# "world" (like an rsync mirror: files keep the modes they were published with), "group" (only the
# members of \`group\`, e.g. group = "www-data"; the agent's user must be in it), or "private" (this user only).
# Keys, database, config and control socket are never readable by others. Applied at every agent start.
mode = "world"
`

/** [[serve]] URLs and the metalink listener (both off until set). */
const MIRRORS_SECTION = `# Where this site publishes trees it mirrors over HTTP(S) (an nginx or httpd serving the subscription path):
# gossiped to every site, and listed in the metalinks and mirrorlists of the sites that answer them. A file's URL
# is url + "/" + its path. location: the server's country; preference: 1 (last resort) to 100 (first choice).
# Only a subscription without --include/--exclude is listed (a filtered one lacks files).
# [[serve]]
# tree = "rhel-10/compose/BaseOS"
# url = "https://mirror.example.org/BaseOS"
# location = "CZ"
# preference = 100

# A public, read-only HTTP listener answering /metalink?tree=T&path=P (add &format=metalink4 for RFC 5854,
# &country=CZ to put that country's mirrors first) and /mirrorlist?tree=T from what the network holds now.
# Off unless listen is set; nothing else is served there (the dashboard stays on loopback).
[mirrors]
# listen = "0.0.0.0:8480"
requestsPerSecond = 20
`

/** Sources published when they change. */
const PUBLISH_SECTION = `# Publish a source directory by itself whenever it changes (instead of lsyncd or a cron job): once nothing
# changed in it for \`quiet\`, or \`maxDelay\` after the first change while it keeps changing. The label may use
# {date} (UTC YYYYMMDD), {time} (UTC HHMMSS) and {seq}. At start the source is published if it changed meanwhile.
# [[publish]]
# tree = "rdo/trunk/centos9"
# src = "/srv/dlrn/repos"
# watch = true
# quiet = "5s"
# maxDelay = "5m"
# label = "{date}.{seq}"
`

/** The request window per peer. */
const SYNC_SECTION = `[sync]
# Bytes of chunk requests outstanding per peer (bandwidth-delay product of your longest link, at least).
windowBytes = 8388608
`

/** Which sites this agent talks to, and which publishers it trusts for which tree. */
const PEERS_AND_TRUST_SECTION = `# Sites this agent talks to. Only these peer ids may connect (connection gater); each is dialled and
# redialled with backoff. Add one with: deltamesh peers add --home DIR /ip4/…/tcp/4101/p2p/12D3KooW…
# [[peers]]
# addr = "/ip4/192.0.2.7/tcp/4101/p2p/12D3KooW..."
# name = "brisbane"

# Publishers whose signed versions of a tree this agent accepts. Add with: deltamesh trust --home DIR TREE KEY
# [[trust]]
# tree = "rhel-10/compose/BaseOS"
# key = "ed25519:..."
`

export function defaultConfigText (listen: string[], announce: string[] = [], dashboard = DEFAULT_DASHBOARD_LISTEN, name?: string): string {
  return [agentSection(listen, announce, name), dashboardSection(dashboard), BANDWIDTH_SECTION, CHUNKING_SECTION, MIRROR_SECTION, MIRRORS_SECTION, PUBLISH_SECTION, SYNC_SECTION, PEERS_AND_TRUST_SECTION].join('\n')
}

export async function writeDefaultConfig (file: string, listen: string[], announce: string[] = [], dashboard?: string, name?: string): Promise<void> {
  const text = defaultConfigText(listen, announce, dashboard, name)
  parseConfig(text, file) // --listen, --announce and --dashboard are checked before anything is written
  await writeFile(file, text, { flag: 'wx', mode: 0o600 })
}

/** Appends a [[peers]] table (validated first), preserving the operator's comments. */
export async function appendPeer (file: string, addr: string, name?: string): Promise<void> {
  const block = `\n[[peers]]\naddr = ${tomlString(addr)}\n${name === undefined ? '' : `name = ${tomlString(name)}\n`}`
  await appendValidated(file, block, { addr, name })
}

export async function appendTrust (file: string, tree: string, key: string): Promise<void> {
  await appendValidated(file, `\n[[trust]]\ntree = ${tomlString(tree)}\nkey = ${tomlString(key)}\n`, { tree, key })
}

/**
 * Removes the [[peers]] table whose addr is `addr` from the file as written: the table's lines go, the
 * operator's comments and everything else stay. Throws a ConfigError (writing nothing) when the entry is not
 * a plain [[peers]] table of this file, or when the file would no longer load (a [[links]] entry naming it).
 */
export async function removePeerEntry (file: string, addr: string): Promise<void> {
  const text = await readFile(file, 'utf8')
  const before = parseConfig(text, file)
  const lines = text.split('\n')
  const header = /^\s*\[/
  const peersHeader = /^\s*\[\[\s*peers\s*\]\]\s*(#.*)?$/
  for (let start = 0; start < lines.length; start++) {
    if (!peersHeader.test(lines[start] as string)) continue
    let end = start + 1
    while (end < lines.length && !header.test(lines[end] as string)) end++
    // comments and blank lines just above the next table belong to it
    while (end > start + 1 && /^\s*(#.*)?$/.test(lines[end - 1] as string)) end--
    const table = parseToml(['[x]', ...lines.slice(start + 1, end)].join('\n')) as { x?: { addr?: unknown } }
    if (table.x?.addr !== addr) continue
    // the blank line `peers add` wrote before the table goes with it
    const from = start > 0 && (lines[start - 1] as string).trim() === '' ? start - 1 : start
    const result = [...lines.slice(0, from), ...lines.slice(end)].join('\n')
    const after = parseConfig(result, file)
    if (after.peers.length !== before.peers.length - 1 || after.peers.some(p => p.addr === addr)) break
    await writeFile(file, result)
    return
  }
  throw new ConfigError(file, 'peers', `no [[peers]] table with addr = ${tomlString(addr)} that can be removed automatically: edit the file`)
}

/** A value given on the command line (or over the control socket) that config.toml could not hold: the input's fault, not the file's. */
export class InvalidInputError extends DeltameshError {
  static override name = 'InvalidInputError'
  constructor (readonly field: string, readonly value: string, expected: string) {
    super(`invalid ${field} ${JSON.stringify(value.slice(0, 200))}: ${expected}`)
    this.name = 'InvalidInputError'
  }
}

async function appendValidated (file: string, block: string, inputs: Record<string, string | undefined> = {}): Promise<void> {
  const current = await readFile(file, 'utf8')
  parseConfig(current, file) // a file already broken is the file's error, named as such
  try {
    parseConfig(current + block, file) // refuse to write a config the agent could not load
  } catch (err) {
    // the file was fine: what was given is at fault; say which argument, not which line of the file
    if (!(err instanceof ConfigError)) throw err
    const field = /([A-Za-z]+)$/.exec(err.key)?.[1] ?? ''
    const value = inputs[field]
    if (value !== undefined) throw new InvalidInputError(field === 'addr' ? 'address' : field, value, err.expected.replace(/^expected /, ''))
    throw err
  }
  await appendFile(file, block)
}
