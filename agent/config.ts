import { appendFile, readFile, writeFile } from 'node:fs/promises'
import { parse as parseToml, TomlError } from 'smol-toml'
import { z } from 'zod'
import { parsePublisherKey } from '../protocol/envelope.js'
import { validateTreeName } from '../protocol/paths.js'
import { DeltameshError } from '../protocol/errors.js'
import { parseRate } from './bandwidth/rate.js'

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
const treeName = z.string().refine(t => { try { validateTreeName(t); return true } catch { return false } }, 'a tree name of segments [A-Za-z0-9._-] joined by /')
const publisherKey = z.string().refine(k => { try { parsePublisherKey(k); return true } catch { return false } }, "a publisher key 'ed25519:…' (printed by `deltamesh init`)")

const rate = z.string().refine(r => { try { parseRate(r); return true } catch { return false } }, "a rate such as '10MB/s', '80Mbit/s' or 'unlimited'")

const configSchema = z.object({
  agent: z.object({
    listen: z.array(multiaddr).default(['/ip4/0.0.0.0/tcp/4101']),
    /** Addresses to announce to peers when listening on 0.0.0.0 is not what they should dial. */
    announce: z.array(multiaddr).default([]),
    /** How long a peer that exhausted its misbehaviour budget is refused (doubles on each repeat). */
    banSeconds: z.number().int().min(1).max(86400).default(600),
  }).strict().default({ listen: ['/ip4/0.0.0.0/tcp/4101'], announce: [], banSeconds: 600 }),
  peers: z.array(z.object({
    addr: peerAddr.and(multiaddr),
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
  }).strict().default({ up: 'unlimited', down: 'unlimited' }),
  sync: z.object({
    /** Chunks requested per WANT batch and outstanding bytes per peer. */
    windowBytes: z.number().int().min(65536).max(1 << 30).default(8 * 1024 * 1024),
  }).strict().default({ windowBytes: 8 * 1024 * 1024 }),
}).strict()

export type AgentConfig = z.infer<typeof configSchema>

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

export function defaultConfigText (listen: string[]): string {
  return `# deltamesh agent configuration (TOML). Written by \`deltamesh init\`; edit freely —
# commands such as \`deltamesh peers add\` and \`deltamesh trust\` append to this file and keep your comments.

[agent]
# libp2p addresses this agent listens on. Peers dial these; use a public or site address on a real WAN.
listen = [${listen.map(tomlString).join(', ')}]
# Addresses other sites should dial, when they differ from the listen addresses (NAT, 0.0.0.0).
announce = []
# Seconds a peer that exceeded its misbehaviour budget (bad chunks, malformed frames) is refused; doubles on repeats.
banSeconds = 600

[limits]
# Bandwidth this agent may use in total, e.g. "10MB/s", "80Mbit/s" or "unlimited".
# up: what it serves to peers; down: what it asks of them.
up = "unlimited"
down = "unlimited"

[sync]
# Bytes of chunk requests outstanding per peer (bandwidth-delay product of your longest link, at least).
windowBytes = 8388608

# Sites this agent talks to. Only these peer ids may connect (connection gater); each is dialled and
# redialled with backoff. Add one with: deltamesh peers add --home DIR /ip4/…/tcp/4101/p2p/12D3KooW…
# [[peers]]
# addr = "/ip4/192.0.2.7/tcp/4101/p2p/12D3KooW..."
# name = "brisbane"

# Publishers whose signed versions of a tree this agent accepts. Add with: deltamesh trust --home DIR TREE KEY
# [[trust]]
# tree = "rhel-10/compose/BaseOS"
# key = "ed25519:..."
`
}

export async function writeDefaultConfig (file: string, listen: string[]): Promise<void> {
  await writeFile(file, defaultConfigText(listen), { flag: 'wx', mode: 0o644 })
}

/** Appends a [[peers]] table (validated first), preserving the operator's comments. */
export async function appendPeer (file: string, addr: string, name?: string): Promise<void> {
  const block = `\n[[peers]]\naddr = ${tomlString(addr)}\n${name === undefined ? '' : `name = ${tomlString(name)}\n`}`
  await appendValidated(file, block)
}

export async function appendTrust (file: string, tree: string, key: string): Promise<void> {
  await appendValidated(file, `\n[[trust]]\ntree = ${tomlString(tree)}\nkey = ${tomlString(key)}\n`)
}

async function appendValidated (file: string, block: string): Promise<void> {
  const current = await readFile(file, 'utf8')
  parseConfig(current + block, file) // refuse to write a config the agent could not load
  await appendFile(file, block)
}
