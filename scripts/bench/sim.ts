// A discrete-time model of one delta spreading from an origin to N sites, as deltamesh's swarm does it
// (rendezvous ownership + HAVE gossip, docs/design-notes.md), against a star (every site pulls the whole delta
// from the origin, as rsync fan-out does). Not a network emulator: chunks move whole, a transfer needs the
// sender's upload budget and the receiver's download budget in the same tick; latency is only the HAVE delay.
// The model is described in docs/benchmarks.md ("Simulation: 200 sites").
// Run: node dist/scripts/bench/sim.js [--json]
import { fileURLToPath } from 'node:url'
import { prng } from '../../agent/demo/tree-gen.js'

export interface SimParams {
  sites: number
  deltaBytes: number
  chunkBytes: number
  /** bytes/s */
  originUp: number
  siteUp: number
  siteDown: number
  tick: number
  /** HAVE announcements are batched every 200 ms: what a site gets is visible to others this much later. */
  haveDelay: number
  /** A site whose own share is done takes the rest from complete holders after this (the agent's 2 s). */
  ownerWait: number
  seed: string
}

export const DEFAULT_SIM: Omit<SimParams, 'sites'> = {
  deltaBytes: 64 * 2 ** 20, chunkBytes: 256 * 1024, originUp: 12.5e6, siteUp: 6.25e6, siteDown: 12.5e6, tick: 0.05, haveDelay: 0.2, ownerWait: 2, seed: 'deltamesh-sim',
}

export interface SimResult { sites: number, seconds: number, originBytes: number, bound: number, starSeconds: number, starOriginBytes: number }

function mix (a: number, b: number): number {
  let h = Math.imul(a ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(b + 0x7f4a7c15, 0xc2b2ae35)
  h ^= h >>> 16; h = Math.imul(h, 0x45d9f3b); h ^= h >>> 16
  return h >>> 0
}

export function simulate (p: SimParams): SimResult {
  const C = Math.ceil(p.deltaBytes / p.chunkBytes)
  const N = p.sites
  const ORIGIN = N
  const rnd = prng(`${p.seed}:${N}`)
  // rendezvous: each chunk's owner is the site with the highest hash of (chunk, site)
  const owner = new Int32Array(C)
  for (let c = 0; c < C; c++) { let best = -1; let bh = -1; for (let i = 0; i < N; i++) { const h = mix(c, i); if (h > bh) { bh = h; best = i } } owner[c] = best }
  // sites others may ask for chunk c (its HAVE has arrived), and the HAVEs still on their way
  const holders: number[][] = Array.from({ length: C }, () => [])
  let haves: Array<[number, number, number]> = []
  const has = Array.from({ length: N }, () => new Uint8Array(C))
  const missing = new Int32Array(N).fill(C)
  const ownedLeft = new Int32Array(N)
  for (let c = 0; c < C; c++) { const o = owner[c] as number; ownedLeft[o] = (ownedLeft[o] as number) + 1 }
  const ownDoneAt = new Float64Array(N).fill(Infinity)
  for (let i = 0; i < N; i++) if (ownedLeft[i] === 0) ownDoneAt[i] = 0
  const doneAt = new Float64Array(N).fill(Infinity)
  const upBudget = new Float64Array(N + 1)
  const downBudget = new Float64Array(N)
  const cursor = new Int32Array(N)
  let originBytes = 0
  let t = 0
  let remaining = N
  while (remaining > 0) {
    if (t > 1e5) throw new Error('simulation did not converge')
    for (let i = 0; i < N; i++) { upBudget[i] = Math.min(upBudget[i] as number + p.siteUp * p.tick, p.siteUp * p.tick + p.chunkBytes); downBudget[i] = Math.min(downBudget[i] as number + p.siteDown * p.tick, p.siteDown * p.tick + p.chunkBytes) }
    upBudget[ORIGIN] = Math.min(upBudget[ORIGIN] as number + p.originUp * p.tick, p.originUp * p.tick + p.chunkBytes)
    haves = haves.filter(([at, i, c]) => { if (at > t + 1e-9) return true; (holders[c] as number[]).push(i); return false })
    const got: Array<[number, number]> = []
    const order = Array.from({ length: N }, (_, i) => i).filter(i => missing[i] as number > 0)
    for (let k = order.length - 1; k > 0; k--) { const j = Math.floor(rnd() * (k + 1)); [order[k], order[j]] = [order[j] as number, order[k] as number] }
    // rounds of one chunk per site, so no site takes a sender's whole budget before the others ask
    let active = order
    while (active.length > 0) {
      const next: number[] = []
      for (const i of active) {
        if ((downBudget[i] as number) < p.chunkBytes) continue
        let took = false
        for (let scanned = 0; scanned < C && !took; scanned++) {
          const c = ((cursor[i] as number) + scanned) % C
          if ((has[i] as Uint8Array)[c] !== 0) continue
          let from = -1
          const mayAskComplete = owner[c] === i || t >= (ownDoneAt[i] as number) + p.ownerWait
          // any site that announced the chunk (finished sites too), at random among those with budget left;
          // the origin only for the chunks a site owns, or after the fallback wait
          const hs = holders[c] as number[]
          const start = Math.floor(rnd() * hs.length)
          for (let s = 0; s < hs.length && from < 0; s++) {
            const j = hs[(start + s) % hs.length] as number
            if ((upBudget[j] as number) >= p.chunkBytes) from = j
          }
          if (from < 0 && mayAskComplete && (upBudget[ORIGIN] as number) >= p.chunkBytes) from = ORIGIN
          if (from < 0) continue
          upBudget[from] = (upBudget[from] as number) - p.chunkBytes
          downBudget[i] = (downBudget[i] as number) - p.chunkBytes
          if (from === ORIGIN) originBytes += p.chunkBytes
          ;(has[i] as Uint8Array)[c] = 2 // in flight until the end of the tick
          got.push([i, c])
          cursor[i] = c
          took = true
        }
        if (took) next.push(i)
      }
      active = next
    }
    t += p.tick
    for (const [i, c] of got) {
      ;(has[i] as Uint8Array)[c] = 1
      haves.push([t + p.haveDelay, i, c])
      missing[i] = (missing[i] as number) - 1
      if (owner[c] === i) { ownedLeft[i] = (ownedLeft[i] as number) - 1; if (ownedLeft[i] === 0) ownDoneAt[i] = t }
      if (missing[i] === 0) { doneAt[i] = t; remaining-- }
    }
  }
  const D = C * p.chunkBytes
  return {
    sites: N, seconds: t, originBytes,
    // no schedule can beat: the origin sending one copy, the slowest downlink, all copies over all uplinks
    bound: Math.max(D / p.originUp, D / p.siteDown, N * D / (p.originUp + N * p.siteUp)),
    starSeconds: Math.max(N * D / p.originUp, D / p.siteDown),
    starOriginBytes: N * D,
  }
}

export const SIM_SITES = [1, 2, 5, 10, 20, 50, 100, 200]

/** The model with the agent's settings, and without the 2 s fallback (an owner is always waited for). */
export function simRuns (p: Omit<SimParams, 'sites'> = DEFAULT_SIM): Array<{ asBuilt: SimResult, noFallback: SimResult }> {
  return SIM_SITES.map(sites => ({ asBuilt: simulate({ ...p, sites }), noFallback: simulate({ ...p, sites, ownerWait: Infinity }) }))
}

export function simTable (runs: Array<{ asBuilt: SimResult, noFallback: SimResult }>, p: Omit<SimParams, 'sites'> = DEFAULT_SIM): string {
  const D = Math.ceil(p.deltaBytes / p.chunkBytes) * p.chunkBytes
  const rows = [
    '| sites | deltamesh model: all hold v2, s | origin upload ÷ delta | without the 2 s fallback: s | … origin ÷ delta | lower bound, s | star (rsync fan-out): s | … origin ÷ delta |',
    '| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...runs.map(({ asBuilt: r, noFallback: n }) => `| ${r.sites} | ${r.seconds.toFixed(1)} | ${(r.originBytes / D).toFixed(2)} | ${n.seconds.toFixed(1)} | ${(n.originBytes / D).toFixed(2)} | ${r.bound.toFixed(1)} | ${r.starSeconds.toFixed(1)} | ${(r.starOriginBytes / D).toFixed(0)} |`),
  ]
  return rows.join('\n')
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const runs = simRuns()
  if (process.argv.includes('--json')) console.log(JSON.stringify(runs))
  else console.log(simTable(runs))
}
