// Durations in the bench's log: each part of a round says how long it took, and the bench's own work
// (reference, copies, checks, removal: not a measured figure) is summed, so that a run shows where its time went.

export class Steps {
  private own = 0

  constructor (private readonly log: (s: string) => void) {}

  /** Seconds spent in `bookkeeping` steps so far. */
  get bookkeepingSeconds (): number { return this.own }

  /** A measured part: logged when it starts and, with its duration, when it ends. */
  async measured<T> (label: string, run: () => Promise<T>): Promise<T> {
    this.log(label)
    const { value, seconds } = await timeOf(run)
    this.log(`${label} … ${seconds.toFixed(1)} s`)
    return value
  }

  /** The bench's own work: logged (when it starts only if `announce`) with its duration, and summed. */
  async bookkeeping<T> (label: string, run: () => Promise<T>, announce = true): Promise<T> {
    if (announce) this.log(label)
    const { value, seconds } = await timeOf(run)
    this.own += seconds
    this.log(`${label} … ${seconds.toFixed(1)} s`)
    return value
  }
}

async function timeOf<T> (run: () => Promise<T>): Promise<{ value: T, seconds: number }> {
  const t0 = performance.now()
  const value = await run()
  return { value, seconds: (performance.now() - t0) / 1000 }
}
