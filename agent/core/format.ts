/** 1536 → "1.50 KiB": binary units, as operators read disk and link figures. */
export function formatBytes (n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let v = n
  let u = 0
  while (Math.abs(v) >= 1024 && u < units.length - 1) { v /= 1024; u++ }
  return `${u === 0 ? v : v.toFixed(Math.abs(v) < 10 ? 2 : 1)} ${units[u] ?? 'B'}`
}
