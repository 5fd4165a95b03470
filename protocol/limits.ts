// Every size a peer or a manifest controls has a named bound here, with the reason for its value.

/** SHA-256 digest length: chunk ids, root hashes. */
export const CHUNK_ID_BYTES = 32

/** Absolute ceiling on one chunk, whatever the chunking parameters say: 4 × the largest max we ship (1 MiB). */
export const MAX_CHUNK_SIZE = 4 * 1024 * 1024

/** Paths longer than Linux PATH_MAX cannot be created anyway. */
export const MAX_PATH_BYTES = 4096

/** NAME_MAX on every common Linux filesystem. */
export const MAX_NAME_BYTES = 255

/** Symlink targets are paths too. */
export const MAX_SYMLINK_TARGET_BYTES = 4096

/** 2^21 chunks ≈ 100 GiB at the default ~52 KiB average: bigger than any ISO or package we mirror; bounds one entry to ~75 MB. */
export const MAX_CHUNKS_PER_FILE = 1 << 21

/** One encoded manifest entry: a file with MAX_CHUNKS_PER_FILE chunks (36 bytes each) plus headroom. */
export const MAX_ENTRY_BYTES = 80 * 1024 * 1024

/** 16 M entries: an order of magnitude above the largest distribution trees (Fedora's full tree is ~1.5 M files). */
export const MAX_MANIFEST_ENTRIES = 16 * 1024 * 1024

/** Largest file we accept in a manifest (2^53 is where JS integers stop being exact). */
export const MAX_FILE_SIZE = 2 ** 50

/** The root blob lists the manifest's chunks (36 bytes each): 4 MiB ≈ 110 k manifest chunks ≈ 7 GiB of manifest. */
export const MAX_ROOT_BYTES = 4 * 1024 * 1024

/** Tree names are short identifiers such as rhel-10/compose/BaseOS. */
export const MAX_TREE_NAME_BYTES = 200

/** Labels are compose ids and similar. */
export const MAX_LABEL_BYTES = 512

/** A signed envelope: small fixed fields plus tree name and label. */
export const MAX_ENVELOPE_BYTES = 4096
