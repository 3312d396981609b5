// The warm-model cache evicts least recently used models by estimated memory.
import t from 'tap'
import { MemoryLru } from '../../../agent/infer/lru.js'

t.test('evicts the least recently used until the total fits', async t => {
  const disposed: string[] = []
  const lru = new MemoryLru<string>(100, k => disposed.push(k))
  t.same(lru.set('a', 'A', 40), [])
  t.same(lru.set('b', 'B', 40), [])
  t.equal(lru.get('a'), 'A') // a is now the most recent
  t.same(lru.set('c', 'C', 40), ['b'], 'b, not a, goes: a was used since')
  t.same(disposed, ['b'])
  t.same(lru.keys(), ['a', 'c'])
  t.equal(lru.bytes, 80)
  t.same(lru.set('big', 'BIG', 90), ['a', 'c'], 'a big model pushes out as many as needed, oldest first')
  t.same(lru.keys(), ['big'])
})

t.test('a model larger than the whole budget is still kept alone', async t => {
  const lru = new MemoryLru<number>(10, () => undefined)
  lru.set('x', 1, 5)
  t.same(lru.set('huge', 2, 50), ['x'])
  t.equal(lru.get('huge'), 2)
  t.equal(lru.bytes, 50)
})

t.test('replacing and deleting keep the byte count', async t => {
  const disposed: number[] = []
  const lru = new MemoryLru<number>(100, (_k, v) => disposed.push(v))
  lru.set('a', 1, 30)
  lru.set('a', 2, 50)
  t.equal(lru.bytes, 50)
  t.same(disposed, [1], 'the replaced value is disposed')
  lru.delete('a')
  t.equal(lru.bytes, 0)
  t.same(disposed, [1, 2])
  t.equal(lru.get('a'), undefined)
})
