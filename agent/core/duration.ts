// Durations as operators write them in config.toml and on the command line: "500ms", "5s", "5m", "1h".

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }

/** Milliseconds of "5s", "1.5m", "250ms", "1h"; throws a TypeError naming the expected form. */
export function parseDuration (text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)$/.exec(text.trim())
  if (m === null) throw new TypeError(`${JSON.stringify(text)}: a duration such as "5s", "500ms", "5m" or "1h"`)
  return Math.round(Number(m[1]) * (UNITS[m[2] as string] as number))
}
