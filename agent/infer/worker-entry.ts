// Entry point of the inference worker process (forked by worker-host.ts). Bundled as
// dist/infer-worker.mjs; run from sources under tsx in tests.
import { serveWorker } from './worker.js'

await serveWorker()
