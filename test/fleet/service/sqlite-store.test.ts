// The fleet store contract against the embedded SQLite store, and what only it has: one
// file shared by two connections (two `fleet serve` processes on one machine).

import t from 'tap'
import { statSync } from 'node:fs'
import { join } from 'node:path'
import { SqliteFleetStore } from '../../../fleet/service/sqlite-store.js'
import { tmp } from '../../helpers/agent.js'
import { storeContract } from './store-contract.js'

storeContract(t, async () => new SqliteFleetStore(tmp('cairn-fleet-')))

t.test('two connections on one file: presence stays ordered whichever writes first; the file is 0600', async t => {
  const dir = tmp('cairn-fleet-')
  const a = new SqliteFleetStore(dir)
  const b = new SqliteFleetStore(dir)
  t.teardown(async () => {
    await a.close()
    await b.close()
  })
  const d = 'b'.repeat(52)
  const base = { device: d, receivedAt: 1, board: 'rpi4', model: 'Raspberry Pi 4 Model B Rev 1.4', version: '1.0.0', problems: [] }
  // the Will lands on b before the online status of the same connection lands on a
  await b.applyStatus({ ...base, id: 'will', state: 'offline', reason: 'connection-lost', key: [10, 20, 1, 20] })
  await a.applyStatus({ ...base, id: 'online', state: 'online', key: [10, 20, 0, 25] })
  t.match(await a.getDevice(d), { state: 'offline' }, 'offline, as the device last said')
  t.match(await b.getDevice(d), { state: 'offline' })
  t.equal(statSync(join(dir, 'fleet.db')).mode & 0o777, 0o600)
})
