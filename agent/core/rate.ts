// Rates as operators type them: "10MB/s", "80Mbit/s", "512KiB/s", "unlimited". Bytes per second inside.

const UNITS: Record<string, number> = {
  'b/s': 1 / 8,
  'bit/s': 1 / 8,
  'kbit/s': 1000 / 8,
  'mbit/s': 1e6 / 8,
  'gbit/s': 1e9 / 8,
  'B/s': 1,
  'kB/s': 1e3,
  'KB/s': 1e3,
  'MB/s': 1e6,
  'GB/s': 1e9,
  'KiB/s': 1024,
  'MiB/s': 1024 ** 2,
  'GiB/s': 1024 ** 3,
}

export class RateParseError extends Error {
  static override name = 'RateParseError'
  constructor (readonly input: string) {
    super(`Not a rate: ${JSON.stringify(input)} (expected e.g. 10MB/s, 80Mbit/s, 512KiB/s or unlimited)`)
    this.name = 'RateParseError'
  }
}

/** Bytes per second, or Infinity for "unlimited". */
export function parseRate (input: string): number {
  const text = input.trim()
  if (/^(unlimited|none|off|0)$/i.test(text)) return Infinity
  const m = /^(\d+(?:\.\d+)?)\s*([A-Za-z]+\/s)$/.exec(text)
  if (m === null) throw new RateParseError(input)
  const unit = m[2] as string
  const factor = UNITS[unit] ?? UNITS[unit.toLowerCase()]
  if (factor === undefined) throw new RateParseError(input)
  const value = Number(m[1]) * factor
  if (!(value > 0) || !Number.isFinite(value)) throw new RateParseError(input)
  return value
}

export function formatRate (bytesPerSecond: number): string {
  if (!Number.isFinite(bytesPerSecond)) return 'unlimited'
  if (bytesPerSecond >= 1e6) return `${(bytesPerSecond / 1e6).toFixed(bytesPerSecond >= 1e7 ? 0 : 1)}MB/s`
  if (bytesPerSecond >= 1e3) return `${(bytesPerSecond / 1e3).toFixed(0)}kB/s`
  return `${Math.round(bytesPerSecond)}B/s`
}
