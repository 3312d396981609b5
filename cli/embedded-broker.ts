// An in-process MQTT 3.1.1 broker (aedes) for `npm start` and for machines without
// Mosquitto. No MQTT 5 and no shared subscriptions: production uses a real broker.

import { createServer, type Server } from 'node:net'
import type { AddressInfo } from 'node:net'
import { Aedes } from 'aedes'

export interface EmbeddedBroker {
  port: number
  url: string
  close(): Promise<void>
}

export async function startEmbeddedBroker(opts: { host?: string; port?: number } = {}): Promise<EmbeddedBroker> {
  const host = opts.host ?? '127.0.0.1'
  const aedes = await Aedes.createBroker()
  const server: Server = createServer(aedes.handle)
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(opts.port ?? 0, host, () => {
      server.off('error', reject)
      resolve()
    })
  })
  const port = (server.address() as AddressInfo).port
  return {
    port,
    url: `mqtt://${host}:${port}`,
    close: async () => {
      await new Promise<void>(r => aedes.close(() => r()))
      await new Promise<void>(r => server.close(() => r()))
    },
  }
}
