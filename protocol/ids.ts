// Protocol ids and gossip topics: the names peers agree on. Bump the semver of a protocol id when its
// frames change incompatibly; both versions can then be served side by side.
import { validateTreeName } from './paths.js'

/** WANT → BLOCK | DONT_HAVE, one long-lived stream per peer pair and direction. */
export const CHUNKS_PROTOCOL = '/deltamesh/chunks/1.0.0'

/**
 * Same requests as 1.0.0; the server may also answer with BLOCKS frames (several chunks compressed together).
 * A new id rather than a flag so a 1.0.0 peer can never be sent a frame it does not know: multistream-select
 * picks 1.1.0 only when both sides list it, and the client falls back to 1.0.0 otherwise.
 */
export const CHUNKS_PROTOCOL_1_1 = '/deltamesh/chunks/1.1.0'

/** DELTA_WANT → DELTA | DONT_HAVE: small-file deltas computed once per version by the publisher. */
export const DELTAS_PROTOCOL = '/deltamesh/deltas/1.0.0'

/** As 1.0.0, but a run of keys without a delta is answered by one DELTA_NONE frame (count) instead of a DONT_HAVE per key. */
export const DELTAS_PROTOCOL_2 = '/deltamesh/deltas/2.0.0'

/** HAVE frames, one long-lived stream per peer and direction: which chunks a syncing site now holds. */
export const HAVES_PROTOCOL = '/deltamesh/haves/1.0.0'

/** HEADS ↔ HEADS: what each side holds, exchanged on connect and on demand. */
export const HEADS_PROTOCOL = '/deltamesh/heads/1.0.0'

/** Gossip topic prefix of per-tree announcements (signed envelopes). */
export const TREE_TOPIC_PREFIX = 'deltamesh/tree/1/'

/** Gossip topic of the periodic site status (network-wide dashboard). */
export const STATUS_TOPIC = 'deltamesh/status/1'

/** The gossip topic a tree's new versions are announced on. Throws InvalidTreeNameError for a bad name. */
export function treeTopic (tree: string): string {
  return TREE_TOPIC_PREFIX + validateTreeName(tree)
}

/** The tree a topic belongs to, or undefined when the topic is not a (valid) tree topic. */
export function treeOfTopic (topic: string): string | undefined {
  if (!topic.startsWith(TREE_TOPIC_PREFIX)) return undefined
  const tree = topic.slice(TREE_TOPIC_PREFIX.length)
  try {
    return validateTreeName(tree)
  } catch {
    // not one of ours: a topic name is not an error, just not a tree topic
    return undefined
  }
}
