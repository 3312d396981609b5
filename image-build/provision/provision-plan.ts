// What provisioning changes on the device, as a list of explicit file steps computed from
// the validated spec and the device's current facts. Pure: the executor (apply.ts)
// performs the steps; tests read them.
//
// Everything lands on the data partition (/var/lib/cairn), so it survives an OS update
// to the other root slot and works with a read-only root: /etc/hostname, /etc/localtime,
// the Wi-Fi configuration and root's authorized_keys are symlinks into /var/lib/cairn/os.

import { pbkdf2Sync } from 'node:crypto'
import { stringify as toYaml } from 'yaml'
import { agentConfig, KEPT_SECRET, ProvisionError, type ProvisionSpec } from './spec.js'
import { nodeRedSettings } from './node-red.js'

export interface Layout {
  /** mount point of the data partition */
  readonly data: string
  /** the agent's state dir (device key, outbox), owned by the cairn user */
  readonly stateDir: string
  /** agent configuration and the keys it reads, root:cairn 0750 */
  readonly etcDir: string
  /** OS settings behind the /etc symlinks, root only */
  readonly osDir: string
  /** mount point of the CAIRN (config) FAT partition */
  readonly configMount: string
  readonly zoneinfo: string
}

export const DEVICE_LAYOUT: Layout = {
  data: '/var/lib/cairn',
  stateDir: '/var/lib/cairn/agent',
  etcDir: '/var/lib/cairn/etc',
  osDir: '/var/lib/cairn/os',
  configMount: '/boot/cairn',
  zoneinfo: '/usr/share/zoneinfo',
}

export interface Owner {
  readonly uid: number
  readonly gid: number
}

export type Step =
  | { readonly kind: 'mkdir'; readonly path: string; readonly mode: number; readonly owner?: Owner }
  | { readonly kind: 'write'; readonly path: string; readonly content: string; readonly mode: number; readonly owner?: Owner }
  | { readonly kind: 'symlink'; readonly path: string; readonly target: string }
  | { readonly kind: 'remove'; readonly path: string; readonly recursive?: boolean }

export interface Facts {
  readonly layout: Layout
  readonly deviceId: string
  /** the cairn user and group */
  readonly cairn: Owner
  /** secrets already stored on the device, for KEPT_SECRET */
  readonly stored: { readonly brokerPassword: boolean; readonly wifi?: { readonly ssid: string; readonly pskHex: string } }
  readonly timezoneExists: (name: string) => boolean
  readonly now: Date
}

const ROOT: Owner = { uid: 0, gid: 0 }

export function defaultHostname(deviceId: string): string {
  return `cairn-${deviceId.slice(0, 8)}`
}

/** Steps that apply a validated provisioning file. Throws ProvisionError when the spec
 * refers to something the device lacks (an unknown time zone, a kept secret never stored). */
export function planProvision(spec: ProvisionSpec, facts: Facts): Step[] {
  const { layout: L, cairn } = facts
  const problems: string[] = []
  if (spec.timezone !== undefined && !facts.timezoneExists(spec.timezone))
    problems.push(`cairn.yaml: timezone: ${JSON.stringify(spec.timezone)} is not a known time zone (see /usr/share/zoneinfo; e.g. Europe/Berlin, America/New_York, UTC)`)
  if (spec.broker.password === KEPT_SECRET && !facts.stored.brokerPassword)
    problems.push(`cairn.yaml: broker.password: "${KEPT_SECRET}" keeps the stored password, but this device has none: write the password`)
  let pskHex: string | undefined
  if (spec.wifi?.psk === KEPT_SECRET) {
    if (facts.stored.wifi?.ssid !== spec.wifi.ssid)
      problems.push(`cairn.yaml: wifi.psk: "${KEPT_SECRET}" keeps the stored passphrase, but none is stored for network ${JSON.stringify(spec.wifi.ssid)}: write the passphrase`)
    else pskHex = facts.stored.wifi.pskHex
  } else if (spec.wifi?.psk !== undefined) pskHex = wpaPskHex(spec.wifi.ssid, spec.wifi.psk)
  if (problems.length) throw new ProvisionError(problems)

  const steps: Step[] = [...layoutSteps(L, cairn)]
  const etcFile = (name: string, content: string, mode = 0o640): Step => ({ kind: 'write', path: `${L.etcDir}/${name}`, content, mode, owner: { uid: 0, gid: cairn.gid } })

  const config = agentConfig(spec, { stateDir: L.stateDir, etcDir: L.etcDir })
  const header = `# Written by cairn-provision from cairn.yaml on the CAIRN drive, ${facts.now.toISOString()}.\n# To change it, put a new cairn.yaml on that drive and reboot (docs/image.md).\n`
  steps.push(etcFile('cairn.yaml', header + toYaml(config)))
  if (spec.broker.password === undefined) steps.push({ kind: 'remove', path: `${L.etcDir}/broker-password` })
  // the agent's user only: Node-RED's user is in the cairn group too (for the local API)
  else if (spec.broker.password !== KEPT_SECRET) steps.push({ kind: 'write', path: `${L.etcDir}/broker-password`, content: spec.broker.password, mode: 0o400, owner: { uid: cairn.uid, gid: 0 } })
  if (spec.broker.ca !== undefined) steps.push(etcFile('broker-ca.pem', spec.broker.ca, 0o644))
  else steps.push({ kind: 'remove', path: `${L.etcDir}/broker-ca.pem` })
  for (const [dir, keys] of [
    ['operators', spec.operatorKeys],
    ['validators', spec.validatorKeys],
  ] as const) {
    steps.push({ kind: 'remove', path: `${L.etcDir}/${dir}`, recursive: true })
    steps.push({ kind: 'mkdir', path: `${L.etcDir}/${dir}`, mode: 0o755, owner: ROOT })
    keys.forEach((k, i) => steps.push(etcFile(`${dir}/${i + 1}.pub`, k.endsWith('\n') ? k : k + '\n', 0o644)))
  }

  const hostname = spec.hostname ?? defaultHostname(facts.deviceId)
  steps.push({ kind: 'write', path: `${L.osDir}/hostname`, content: hostname + '\n', mode: 0o644, owner: ROOT })
  steps.push({ kind: 'symlink', path: `${L.osDir}/localtime`, target: `${L.zoneinfo}/${spec.timezone ?? 'UTC'}` })
  steps.push({ kind: 'write', path: `${L.osDir}/timezone`, content: (spec.timezone ?? 'UTC') + '\n', mode: 0o644, owner: ROOT })

  if (spec.wifi) steps.push({ kind: 'write', path: `${L.osDir}/wpa_supplicant-wlan0.conf`, content: wpaConfig(spec.wifi.ssid, spec.wifi.country, spec.wifi.hidden, pskHex), mode: 0o600, owner: ROOT })
  else steps.push({ kind: 'remove', path: `${L.osDir}/wpa_supplicant-wlan0.conf` })

  if (spec.sshAuthorizedKeys.length) {
    steps.push({ kind: 'mkdir', path: `${L.osDir}/ssh`, mode: 0o700, owner: ROOT })
    steps.push({ kind: 'write', path: `${L.osDir}/ssh/authorized_keys`, content: spec.sshAuthorizedKeys.join('\n') + '\n', mode: 0o600, owner: ROOT })
  } else steps.push({ kind: 'remove', path: `${L.osDir}/ssh/authorized_keys` })

  // Node-RED: cairn-node-red.service runs while its settings exist
  steps.push({ kind: 'mkdir', path: `${L.etcDir}/node-red`, mode: 0o750, owner: { uid: 0, gid: cairn.gid } })
  if (spec.nodeRed.enabled) steps.push(etcFile('node-red/settings.js', nodeRedSettings(spec.nodeRed, facts.now)))
  else steps.push({ kind: 'remove', path: `${L.etcDir}/node-red/settings.js` })

  steps.push({ kind: 'write', path: `${L.etcDir}/provisioned`, content: `${facts.now.toISOString()}\n`, mode: 0o644, owner: ROOT })
  return steps
}

/** Steps run on every boot, provisioned or not: the directory layout, a default host
 * name, and the mDNS service record naming the device. */
export function planBoot(facts: Facts, current: { hostname?: string | undefined }): Step[] {
  const L = facts.layout
  const steps: Step[] = [...layoutSteps(L, facts.cairn)]
  if (!current.hostname) steps.push({ kind: 'write', path: `${L.osDir}/hostname`, content: defaultHostname(facts.deviceId) + '\n', mode: 0o644, owner: ROOT })
  // A directory of its own: the image's avahi drop-in binds it over /etc/avahi/services
  // (avahi chroots into /etc/avahi, where a symlink into /var/lib/cairn cannot resolve).
  steps.push({ kind: 'mkdir', path: `${L.osDir}/avahi`, mode: 0o755, owner: ROOT })
  steps.push({ kind: 'write', path: `${L.osDir}/avahi/cairn.service`, content: avahiService(facts.deviceId), mode: 0o644, owner: ROOT })
  // where earlier builds wrote it (behind a symlink avahi could not follow)
  steps.push({ kind: 'remove', path: `${L.osDir}/avahi-cairn.service` })
  return steps
}

export function layoutSteps(L: Layout, cairn: Owner): Step[] {
  return [
    // root:cairn, sticky: the agent creates its local API socket and token here
    // (api.sock, api.token, for the cairn group: Node-RED), and
    // cannot rename or remove root's entries (etc/, os/)
    { kind: 'mkdir', path: L.data, mode: 0o1775, owner: { uid: 0, gid: cairn.gid } },
    { kind: 'mkdir', path: L.stateDir, mode: 0o700, owner: cairn },
    { kind: 'mkdir', path: L.etcDir, mode: 0o750, owner: { uid: 0, gid: cairn.gid } },
    { kind: 'mkdir', path: L.osDir, mode: 0o755, owner: ROOT },
  ]
}

/** WPA-PSK key as wpa_passphrase computes it, so the passphrase itself is not stored. */
export function wpaPskHex(ssid: string, psk: string): string {
  if (/^[0-9a-fA-F]{64}$/.test(psk)) return psk.toLowerCase()
  return pbkdf2Sync(psk, ssid, 4096, 32, 'sha1').toString('hex')
}

function wpaConfig(ssid: string, country: string, hidden: boolean, pskHex: string | undefined): string {
  const lines = [
    '# Written by cairn-provision from cairn.yaml (wifi). The passphrase is stored hashed.',
    'ctrl_interface=DIR=/run/wpa_supplicant GROUP=netdev',
    'update_config=0',
    `country=${country}`,
    '',
    'network={',
    `\tssid=${wpaQuote(ssid)}`,
    ...(hidden ? ['\tscan_ssid=1'] : []),
    ...(pskHex !== undefined ? [`\tpsk=${pskHex}`, '\tkey_mgmt=WPA-PSK'] : ['\tkey_mgmt=NONE']),
    '}',
    '',
  ]
  return lines.join('\n')
}

/** wpa_supplicant reads ssid as "text" or as hex bytes; hex avoids any quoting question. */
function wpaQuote(ssid: string): string {
  return /^[\x20-\x7e]+$/.test(ssid) && !ssid.includes('"') ? `"${ssid}"` : Buffer.from(ssid).toString('hex')
}

/** Reads back what wpaConfig wrote, for KEPT_SECRET. */
export function parseWpaConfig(text: string): { ssid: string; pskHex: string } | undefined {
  const ssidLine = /^\s*ssid=(.*)$/m.exec(text)?.[1]
  const psk = /^\s*psk=([0-9a-f]{64})$/m.exec(text)?.[1]
  if (ssidLine === undefined || psk === undefined) return undefined
  const ssid = ssidLine.startsWith('"') ? ssidLine.slice(1, -1) : Buffer.from(ssidLine, 'hex').toString()
  return { ssid, pskHex: psk }
}

function avahiService(deviceId: string): string {
  return `<?xml version="1.0" standalone='no'?>
<!DOCTYPE service-group SYSTEM "avahi-service.dtd">
<!-- Written by cairn-provision: announces the Cairn device on the local network. -->
<service-group>
  <name replace-wildcards="yes">Cairn %h</name>
  <service>
    <type>_cairn._tcp</type>
    <port>9</port>
    <txt-record>id=${deviceId}</txt-record>
  </service>
</service-group>
`
}
