// The device's identity: an ed25519 key pair made on first start in the state dir.
// The private key never leaves the file (mode 0600); the device id is its key id.

import { existsSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { CairnError } from './errors.js'
import { generateKeyPair, readKeyPairFile, writeKeyPairFiles, type KeyPair } from './keys.js'
import { DEVICE_KEY_FILE } from './state-files.js'

export interface Identity extends KeyPair {
  readonly deviceId: string
}

export function ensureStateDir(stateDir: string): void {
  try {
    mkdirSync(stateDir, { recursive: true, mode: 0o700 })
  } catch (err) {
    throw new CairnError('STATE_DIR', `state dir ${stateDir}: cannot create (${(err as NodeJS.ErrnoException).code ?? err})`, { cause: err })
  }
}

/** Loads the device key, making it on first start. */
export function loadOrCreateIdentity(stateDir: string): { identity: Identity; created: boolean } {
  ensureStateDir(stateDir)
  const file = join(stateDir, DEVICE_KEY_FILE)
  let created = false
  if (!existsSync(file)) {
    try {
      writeKeyPairFiles(file, generateKeyPair())
    } catch (err) {
      if (err instanceof CairnError) throw err
      throw new CairnError('STATE_DIR', `state dir ${stateDir}: cannot write device key (${(err as NodeJS.ErrnoException).code ?? err})`, { cause: err })
    }
    created = true
  }
  const pair = readKeyPairFile(file)
  return { identity: { ...pair, deviceId: pair.keyId }, created }
}

/** Reads an existing identity without creating one (for `cairn id`). */
export function readIdentity(stateDir: string): Identity {
  const file = join(stateDir, DEVICE_KEY_FILE)
  if (!existsSync(file)) throw new CairnError('STATE_DIR', `${file} does not exist: start the agent once (or run \`cairn id --init\`) to make the device key`)
  const pair = readKeyPairFile(file)
  return { ...pair, deviceId: pair.keyId }
}
