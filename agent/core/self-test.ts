// The new version's own self-test during an OTA trial: the state dir takes a durable
// write, the device key loads and signs, and one telemetry sample can be taken. Each
// part is checked separately so the rollback reason names what failed.

import { sign, verify } from 'node:crypto'
import { closeSync, fsyncSync, openSync, rmSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { DEVICE_KEY_FILE } from '../../protocol/state-files.js'
import { readKeyPairFile } from '../../protocol/keys.js'

export interface SelfTestDeps {
  stateDir: string
  /** Takes one telemetry sample; rejects when it cannot. */
  sample(): Promise<unknown>
}

export interface SelfTestResult {
  ok: boolean
  failures: string[]
}

export async function runSelfTest(d: SelfTestDeps): Promise<SelfTestResult> {
  const failures: string[] = []
  const probe = join(d.stateDir, `.ota-self-test.${process.pid}`)
  try {
    const fd = openSync(probe, 'w', 0o600)
    try {
      writeSync(fd, 'cairn')
      fsyncSync(fd)
    } finally {
      closeSync(fd)
    }
    rmSync(probe)
  } catch (err) {
    failures.push(`state dir not writable (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`)
  }
  try {
    const key = readKeyPairFile(join(d.stateDir, DEVICE_KEY_FILE))
    const msg = Buffer.from('cairn ota self-test')
    if (!verify(null, msg, key.publicKey, sign(null, msg, key.privateKey))) failures.push('device key does not sign')
  } catch (err) {
    failures.push(`device key does not load (${(err as Error).message})`)
  }
  try {
    await d.sample()
  } catch (err) {
    failures.push(`telemetry sample failed (${(err as Error).message})`)
  }
  return { ok: failures.length === 0, failures }
}
