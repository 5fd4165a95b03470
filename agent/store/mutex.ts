// Serialises async work per key. indexFile and removeFile read a file's old locations and then write; two
// of them on the same file at once could each miss the other's keys and leave stale locations behind.
export class KeyedMutex {
  private readonly tails = new Map<string, Promise<void>>()

  async run<T> (key: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(key) ?? Promise.resolve()
    let done!: () => void
    const tail = new Promise<void>(resolve => { done = resolve })
    this.tails.set(key, tail)
    try {
      await previous
      return await fn()
    } finally {
      done()
      // Only the last waiter removes the entry, so the map holds just the keys with work queued.
      if (this.tails.get(key) === tail) this.tails.delete(key)
    }
  }
}
