// A small SVG line chart written without any library: one panel per quantity, one line per agent.
import type { Quantity, Sample } from './sample.js'

const COLOURS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b']
const W = 760
const H = 250
const PAD = { left: 60, right: 120, top: 28, bottom: 34 }

function esc (s: string): string { return s.replace(/&/g, '&amp;').replace(/</g, '&lt;') }

function niceMax (v: number): number {
  if (!(v > 0)) return 1
  const p = 10 ** Math.floor(Math.log10(v))
  return [1, 2, 2.5, 5, 10].map(k => k * p).find(m => m >= v) ?? v
}

function panel (samples: Sample[], y: Quantity, title: string, top: number, marks: Array<{ version: number, label: string }>): string {
  const agents = [...new Set(samples.map(s => s.agent))]
  const xs = samples.map(s => s.version)
  const x0 = Math.min(...xs)
  const x1 = Math.max(x0 + 1, ...xs)
  const yMax = niceMax(Math.max(...samples.map(s => s[y]).filter(Number.isFinite)))
  const pw = W - PAD.left - PAD.right
  const ph = H - PAD.top - PAD.bottom
  const px = (x: number): number => PAD.left + (x - x0) / (x1 - x0) * pw
  const py = (v: number): number => top + PAD.top + ph - v / yMax * ph
  const out: string[] = [`<text x="${PAD.left}" y="${top + 18}" font-weight="bold">${esc(title)}</text>`]
  for (let i = 0; i <= 4; i++) {
    const v = yMax * i / 4
    out.push(`<line x1="${PAD.left}" x2="${PAD.left + pw}" y1="${py(v)}" y2="${py(v)}" stroke="#ddd"/>`,
      `<text x="${PAD.left - 6}" y="${py(v) + 4}" text-anchor="end">${+v.toPrecision(3)}</text>`)
  }
  for (let i = 0; i <= 5; i++) {
    const x = Math.round(x0 + (x1 - x0) * i / 5)
    out.push(`<text x="${px(x)}" y="${top + H - 14}" text-anchor="middle">${x}</text>`)
  }
  out.push(`<text x="${PAD.left + pw / 2}" y="${top + H - 1}" text-anchor="middle">version</text>`)
  for (const m of marks) out.push(`<line x1="${px(m.version)}" x2="${px(m.version)}" y1="${top + PAD.top}" y2="${top + PAD.top + ph}" stroke="#999" stroke-dasharray="3,3"><title>${esc(m.label)}</title></line>`)
  agents.forEach((agent, i) => {
    const colour = COLOURS[i % COLOURS.length] as string
    const points = samples.filter(s => s.agent === agent && Number.isFinite(s[y])).map(s => `${px(s.version).toFixed(1)},${py(s[y]).toFixed(1)}`)
    out.push(`<polyline fill="none" stroke="${colour}" stroke-width="1.5" points="${points.join(' ')}"/>`,
      `<text x="${PAD.left + pw + 10}" y="${top + PAD.top + 14 + i * 16}" fill="${colour}">${esc(agent)}</text>`)
  })
  return out.join('\n')
}

/** RSS and LevelDB size over versions; dashed lines mark restarts and the full disk. */
export function soakSvg (samples: Sample[], title: string, marks: Array<{ version: number, label: string }>): string {
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${2 * H + 30}" font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${PAD.left}" y="16" font-size="13">${esc(title)}</text>`,
    panel(samples, 'rssMiB', 'RSS (MiB)', 20, marks),
    panel(samples, 'dbMiB', 'LevelDB directory (MiB)', 20 + H, marks),
    '</svg>\n',
  ].join('\n')
}
