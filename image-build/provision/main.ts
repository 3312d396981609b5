// cairn-provision: runs on every boot before the agent (cairn-provision.service).
// Makes the device key, applies a cairn.yaml found on the CAIRN drive, writes the result
// back to that drive, and keeps the host name and mDNS record current. It never stops the
// boot: problems go to the result file and the journal, and the agent keeps its previous
// settings.

import { closeSync, constants, existsSync, fchownSync, openSync, readFileSync, readdirSync, rmSync, writeFileSync, writeSync, chownSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { execFileSync } from 'node:child_process'
import { loadOrCreateIdentity } from '../../protocol/identity.js'
import { DEVICE_KEY_FILE, PROVISION_ERROR_FILE } from '../../protocol/state-files.js'
import { VERSION } from '../../protocol/version.js'
import { parseProvisioning, ProvisionError } from './spec.js'
import { defaultHostname, layoutSteps, parseWpaConfig, planBoot, planProvision, type Facts, type Layout, type Owner } from './provision-plan.js'
import { applySteps } from './apply.js'
import { APPLIED_FILE, PROVISION_FILE, RESULT_FILE, findProvisionFile, redact, resultText, wipeAndRemove, writeDriveFile, type Outcome } from './drive.js'

export interface ProvisionEnv {
  /** file system root; '/' on the device */
  readonly root: string
  readonly layout: Layout
  readonly cairn: Owner
  readonly now: () => Date
  readonly log: (line: string) => void
  /** set owners, the kernel host name and ssh host keys: only on the device */
  readonly privileged: boolean
  /** the CAIRN partition is mounted at layout.configMount (else its empty mount point
   * on the root would be mistaken for an empty drive) */
  readonly driveMounted: boolean
}

export interface ProvisionReport {
  readonly outcome: Outcome | undefined
  readonly deviceId: string
  readonly hostname: string
}

export function provision(env: ProvisionEnv): ProvisionReport {
  const L = env.layout
  const at = (p: string) => join(env.root, p)
  const apply = (steps: Parameters<typeof applySteps>[0]) => applySteps(steps, { root: env.root, chown: env.privileged })

  apply(layoutSteps(L, env.cairn))
  persistMachineId(env)

  const { identity, created } = loadOrCreateIdentity(at(L.stateDir))
  if (env.privileged) for (const f of [DEVICE_KEY_FILE, `${DEVICE_KEY_FILE}.pub`]) if (existsSync(at(`${L.stateDir}/${f}`))) chownSync(at(`${L.stateDir}/${f}`), env.cairn.uid, env.cairn.gid)
  const deviceId = identity.deviceId
  env.log(`device id ${deviceId}${created ? ' (key made now)' : ''}`)

  const facts = baseFacts(env, deviceId)
  const found = env.driveMounted ? findProvisionFile(readdirSync(at(L.configMount))) : undefined
  const driveFile = at(`${L.configMount}/${found ?? PROVISION_FILE}`)
  let outcome: Outcome | undefined
  if (!env.driveMounted) {
    env.log(`the CAIRN partition is not mounted at ${L.configMount}: cannot read ${PROVISION_FILE} or write ${RESULT_FILE}; keeping the current settings`)
  } else if (found) {
    const text = readFileSync(driveFile, 'utf8')
    try {
      const spec = parseProvisioning(text, { file: found })
      apply(planProvision(spec, facts))
      const hostname = spec.hostname ?? defaultHostname(deviceId)
      const nodeRed = !spec.nodeRed.enabled
        ? 'off'
        : spec.nodeRed.lan
          ? `on, editor at http://${hostname}.local:1880 (admin password)`
          : 'on, editor on the device only (ssh -L 1880:127.0.0.1:1880, then http://127.0.0.1:1880)'
      // the image's release channel (build.sh --release-root/--release-url), if it has one
      const channel = /^CAIRN_OTA_RELEASE_URL=(.*)$/m.exec(readIfExists(at('/opt/cairn/ota.env')) ?? '')?.[1]
      const updates = channel ? `on, from ${channel}` : 'off (this image was built without a release channel)'
      outcome = {
        status: 'ok',
        deviceId,
        hostname,
        fleet: spec.fleet,
        broker: spec.broker.url,
        wifi: spec.wifi ? `${spec.wifi.ssid} (${spec.wifi.country})` : undefined,
        ssh: spec.sshAuthorizedKeys.length > 0,
        nodeRed,
        updates,
      }
      writeDriveFile(at(`${L.configMount}/${APPLIED_FILE}`), redact(text, env.now()))
      wipeAndRemove(driveFile)
      clearProvisionError(env)
      env.log(`applied ${found}: fleet ${spec.fleet}, broker ${spec.broker.url}; secrets removed from the drive`)
    } catch (err) {
      const problems = err instanceof ProvisionError ? err.problems : [`internal error: ${(err as Error).message}`]
      outcome = { status: 'error', deviceId, problems, kept: true }
      for (const p of problems) env.log(`cairn.yaml not applied: ${p}`)
      markProvisionError(env, problems)
    }
  } else if (!existsSync(at(`${L.etcDir}/cairn.yaml`))) {
    outcome = { status: 'waiting', deviceId, hostname: currentHostname(env) ?? defaultHostname(deviceId) }
    env.log(`no ${PROVISION_FILE} on the CAIRN drive and no settings yet: the agent waits`)
  }

  apply(planBoot(facts, { hostname: currentHostname(env) }))
  const hostname = currentHostname(env) ?? defaultHostname(deviceId)
  if (env.privileged) {
    writeFileSync('/proc/sys/kernel/hostname', hostname)
    if (existsSync(at(`${L.osDir}/ssh/authorized_keys`)) && !existsSync(at(`${L.osDir}/ssh/ssh_host_ed25519_key`))) {
      execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', `root@${hostname}`, '-f', at(`${L.osDir}/ssh/ssh_host_ed25519_key`)])
      env.log('made the ssh host key')
    }
  }
  if (outcome && env.driveMounted) writeDriveFile(at(`${L.configMount}/${RESULT_FILE}`), resultText(outcome, env.now(), VERSION))
  env.log(`host name ${hostname}`)
  return { outcome, deviceId, hostname }
}

function baseFacts(env: ProvisionEnv, deviceId: string): Facts {
  const L = env.layout
  const at = (p: string) => join(env.root, p)
  let wifi: Facts['stored']['wifi']
  try {
    wifi = parseWpaConfig(readFileSync(at(`${L.osDir}/wpa_supplicant-wlan0.conf`), 'utf8'))
  } catch {
    wifi = undefined
  }
  return {
    layout: L,
    deviceId,
    cairn: env.cairn,
    stored: { brokerPassword: existsSync(at(`${L.etcDir}/broker-password`)), ...(wifi ? { wifi } : {}) },
    timezoneExists: name => {
      try {
        return statSync(at(`${L.zoneinfo}/${name}`)).isFile()
      } catch {
        return false
      }
    },
    now: env.now(),
  }
}

/** The agent's status LED shows the provisioning-error pattern while this marker exists
 * in its state dir (agent/device-ui): a headless device says a refused cairn.yaml with
 * its light. The state dir belongs to the agent, so the marker is made without following
 * a link planted there, and handed to the agent's user. */
function markProvisionError(env: ProvisionEnv, problems: readonly string[]): void {
  const file = join(env.root, env.layout.stateDir, PROVISION_ERROR_FILE)
  try {
    rmSync(file, { force: true })
    const fd = openSync(file, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600)
    try {
      writeSync(fd, problems.join('\n') + '\n')
      if (env.privileged) fchownSync(fd, env.cairn.uid, env.cairn.gid)
    } finally {
      closeSync(fd)
    }
  } catch (err) {
    env.log(`could not write ${file}: ${(err as Error).message}`)
  }
}

function clearProvisionError(env: ProvisionEnv): void {
  rmSync(join(env.root, env.layout.stateDir, PROVISION_ERROR_FILE), { force: true })
}

function readIfExists(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8')
  } catch {
    return undefined
  }
}

function currentHostname(env: ProvisionEnv): string | undefined {
  try {
    return readFileSync(join(env.root, env.layout.osDir, 'hostname'), 'utf8').trim() || undefined
  } catch {
    return undefined
  }
}

/** The first boot's machine id moves to the data partition; from the next boot on the
 * initramfs binds it over /etc/machine-id, whichever root slot boots. */
function persistMachineId(env: ProvisionEnv): void {
  const saved = join(env.root, env.layout.osDir, 'machine-id')
  if (existsSync(saved)) return
  let id = ''
  try {
    id = readFileSync(join(env.root, 'etc/machine-id'), 'utf8').trim()
  } catch {
    return
  }
  if (!/^[0-9a-f]{32}$/.test(id)) return
  writeFileSync(saved, id + '\n', { mode: 0o444 })
  env.log(`machine id ${id} kept on the data partition`)
}

export function lookupCairnUser(root: string): Owner {
  const line = readFileSync(join(root, 'etc/passwd'), 'utf8')
    .split('\n')
    .find(l => l.startsWith('cairn:'))
  const f = line?.split(':')
  if (!f || f.length < 4) throw new Error('no cairn user in /etc/passwd')
  return { uid: Number(f[2]), gid: Number(f[3]) }
}
