import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { benchInference } from './inference.js'
const rows: unknown[] = []
const r = await benchInference({ quick: true, bundle: '', row: x => rows.push(x), tmp: p => mkdtempSync(join(tmpdir(), p)), track: () => undefined, log: l => console.log(l) })
console.log(JSON.stringify(rows, null, 1))
console.log(JSON.stringify(r).slice(0, 300))
