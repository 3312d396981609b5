// Child process for crash.test.ts: opens a store and downloads one object from a slow
// origin until the parent kills it with SIGKILL. Prints "writing" once bytes are on disk.

import { ContentStore } from '../../../agent/cache/store.js'

const [dir, sha256, url] = process.argv.slice(2) as [string, string, string]
if (!url) {
  console.log('# helper of crash.test.ts: run it from there')
  process.exit(0)
}
const store = await ContentStore.open({ dir, quotaBytes: 1 << 30, maxObjectBytes: 1 << 30, diskFree: () => 1e12 })
const timer = setInterval(() => {
  if (store.usage().reservedBytes > 0) {
    console.log('writing')
    clearInterval(timer)
  }
}, 20)
await store.lease(sha256, [url], { signal: new AbortController().signal })
console.log('finished (unexpected)')
