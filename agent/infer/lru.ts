// A least-recently-used map bounded by an estimate of the memory its values hold
// (loaded models: their weights live in the backend's memory, outside the JS heap).
// The newest entry is always kept, even alone over the budget: a model that does not
// fit the cache must still run once.

export class MemoryLru<V> {
  private readonly map = new Map<string, { value: V; bytes: number }>()
  private total = 0

  constructor(
    private readonly budgetBytes: number,
    private readonly onEvict: (key: string, value: V) => void,
  ) {}

  get(key: string): V | undefined {
    const e = this.map.get(key)
    if (e === undefined) return undefined
    // Map keeps insertion order: re-inserting makes it the most recent.
    this.map.delete(key)
    this.map.set(key, e)
    return e.value
  }

  /** Adds (or replaces) an entry, then evicts the least recently used ones until the
   * total fits the budget. Returns the evicted keys, oldest first. */
  set(key: string, value: V, bytes: number): string[] {
    const old = this.map.get(key)
    if (old !== undefined) {
      this.map.delete(key)
      this.total -= old.bytes
      if (old.value !== value) this.onEvict(key, old.value)
    }
    this.map.set(key, { value, bytes })
    this.total += bytes
    const evicted: string[] = []
    for (const [k, e] of this.map) {
      if (this.total <= this.budgetBytes || k === key) break
      this.map.delete(k)
      this.total -= e.bytes
      evicted.push(k)
      this.onEvict(k, e.value)
    }
    return evicted
  }

  delete(key: string): void {
    const e = this.map.get(key)
    if (e === undefined) return
    this.map.delete(key)
    this.total -= e.bytes
    this.onEvict(key, e.value)
  }

  clear(): void {
    for (const k of [...this.map.keys()]) this.delete(k)
  }

  get bytes(): number {
    return this.total
  }

  keys(): string[] {
    return [...this.map.keys()]
  }
}
