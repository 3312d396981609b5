// The provisioning file (cairn.yaml on the CAIRN drive): its shape, and validation with
// errors a hobbyist can act on (each names the field, says what is wrong and what to
// write instead). Pure: no file system, so the host tests run it as the device does.

import { dirname } from 'node:path'
import { parse as parseYaml, YAMLParseError } from 'yaml'
import { isKeyId, parsePublicKey } from '../../protocol/keys.js'
import { NAME_PATTERN } from '../../protocol/envelope.js'
import { OWNER_PATTERN } from '../../protocol/proof-format.js'
import { resolveConfig } from '../../agent/config/load-config.js'

/** A secret that was applied earlier and removed from the drive; writing this marker back
 * (e.g. in a copy of cairn-applied.yaml) keeps the value stored on the device. */
export const KEPT_SECRET = '<kept on device>'

interface WifiSpec {
  readonly ssid: string
  /** absent: an open network */
  readonly psk?: string | typeof KEPT_SECRET
  readonly country: string
  readonly hidden: boolean
}

/** Node-RED on the device (cairn-node-red.service). */
export interface NodeRedSpec {
  readonly enabled: boolean
  /** editor and HTTP nodes on every interface (0.0.0.0) instead of 127.0.0.1 */
  readonly lan: boolean
  /** bcrypt hash of the editor's admin password; required when lan is true */
  readonly adminPasswordHash?: string
}

export interface ProvisionSpec {
  readonly fleet: string
  readonly broker: {
    readonly url: string
    readonly username?: string
    readonly password?: string
    readonly mqttVersion?: 4 | 5
    /** PEM text of the CA that signed the broker certificate */
    readonly ca?: string
  }
  /** ed25519 public keys, PEM (SPKI) or key id, normalised to trimmed text */
  readonly operatorKeys: readonly string[]
  readonly validatorKeys: readonly string[]
  readonly owner?: string
  readonly hostname?: string
  readonly timezone?: string
  readonly wifi?: WifiSpec
  readonly sshAuthorizedKeys: readonly string[]
  readonly nodeRed: NodeRedSpec
  /** further agent settings (docs/configuration.md), merged under the ones above */
  readonly agent: Readonly<Record<string, unknown>>
}

export class ProvisionError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(problems.join('\n'))
    this.name = 'ProvisionError'
  }
}

const TOP_KEYS = ['fleet', 'broker', 'operatorKeys', 'validatorKeys', 'owner', 'hostname', 'timezone', 'wifi', 'ssh', 'nodeRed', 'agent'] as const
const NODE_RED_KEYS = ['enabled', 'lan', 'adminPasswordHash'] as const
/** bcrypt as Node-RED's adminAuth takes it ($2a$/$2b$/$2y$, cost 04-31, 53 characters of salt and hash) */
const BCRYPT_RE = /^\$2[aby]\$(0[4-9]|[12]\d|3[01])\$[./A-Za-z0-9]{53}$/
const BROKER_KEYS = ['url', 'username', 'password', 'mqttVersion', 'ca'] as const
const WIFI_KEYS = ['ssid', 'psk', 'country', 'hidden'] as const
const SSH_KEYS = ['authorizedKeys'] as const
/** Fields whose values are removed from the drive once applied. */
export const SECRET_FIELDS = [
  ['broker', 'password'],
  ['wifi', 'psk'],
] as const

const HOSTNAME_RE = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/
const TIMEZONE_RE = /^(UTC|[A-Za-z][A-Za-z0-9_+-]*(\/[A-Za-z0-9_+-]+){0,2})$/
const COUNTRY_RE = /^[A-Z]{2}$/
const SSH_KEY_RE = /^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]+={0,2}( .*)?$/

type Obj = Record<string, unknown>
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v)

/** Parses and validates the text of cairn.yaml; throws ProvisionError listing every problem. */
export function parseProvisioning(text: string, opts: { file?: string } = {}): ProvisionSpec {
  const file = opts.file ?? 'cairn.yaml'
  let doc: unknown
  try {
    doc = parseYaml(text, { uniqueKeys: true })
  } catch (err) {
    const where = err instanceof YAMLParseError && err.linePos ? ` (line ${err.linePos[0].line}, column ${err.linePos[0].col})` : ''
    throw new ProvisionError([`${file}: not valid YAML${where}: ${(err as Error).message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '')}`])
  }
  if (!isObj(doc)) throw new ProvisionError([`${file}: expected settings like "fleet: my-fleet", one per line; the file is empty or not a mapping`])
  return validate(doc, file)
}

function validate(doc: Obj, file: string): ProvisionSpec {
  const problems: string[] = []
  const bad = (field: string, msg: string) => problems.push(`${file}: ${field}: ${msg}`)
  unknownKeys(doc, TOP_KEYS, '', bad)

  const str = (v: unknown, field: string, required: boolean): string | undefined => {
    if (v === undefined || v === null) {
      if (required) bad(field, 'required')
      return undefined
    }
    if (typeof v === 'number' || typeof v === 'boolean') return String(v) // YAML reads "1234" unquoted as a number
    if (typeof v !== 'string') {
      bad(field, `expected text, got ${describe(v)}`)
      return undefined
    }
    return v
  }

  const fleet = str(doc.fleet, 'fleet', true)
  if (fleet !== undefined && !new RegExp(NAME_PATTERN).test(fleet)) bad('fleet', `${JSON.stringify(fleet)} is not a fleet name: use lowercase letters, digits, - and _ (at most 64)`)

  let broker: ProvisionSpec['broker'] | undefined
  if (!isObj(doc.broker))
    bad('broker', doc.broker === undefined ? 'required (at least "broker: { url: mqtt://host:1883 }")' : `expected a mapping with url, username, password, got ${describe(doc.broker)}`)
  else {
    const b = doc.broker
    unknownKeys(b, BROKER_KEYS, 'broker.', bad)
    const url = str(b.url, 'broker.url', true)
    if (url !== undefined) {
      let ok = /^(mqtts?|wss?):\/\//.test(url)
      try {
        ok = ok && new URL(url).hostname.length > 0
      } catch {
        ok = false
      }
      if (!ok) bad('broker.url', `${JSON.stringify(url)} is not a broker URL: write mqtt://host:1883, mqtts://host:8883, ws:// or wss://`)
    }
    const username = str(b.username, 'broker.username', false)
    const password = str(b.password, 'broker.password', false)
    let mqttVersion: 4 | 5 | undefined
    if (b.mqttVersion !== undefined) {
      if (b.mqttVersion === 4 || b.mqttVersion === 5) mqttVersion = b.mqttVersion
      else bad('broker.mqttVersion', `must be 5 (MQTT 5) or 4 (MQTT 3.1.1), got ${describe(b.mqttVersion)}`)
    }
    const ca = str(b.ca, 'broker.ca', false)
    if (ca !== undefined && !/-----BEGIN CERTIFICATE-----/.test(ca)) bad('broker.ca', 'expected the PEM text of a CA certificate ("-----BEGIN CERTIFICATE-----" …), written as a YAML block (ca: |)')
    if (url !== undefined) {
      broker = {
        url,
        ...(username !== undefined ? { username } : {}),
        ...(password !== undefined ? { password } : {}),
        ...(mqttVersion !== undefined ? { mqttVersion } : {}),
        ...(ca !== undefined ? { ca: ca.trim() + '\n' } : {}),
      }
    }
  }

  const keys = (v: unknown, field: string): string[] => {
    if (v === undefined || v === null) return []
    const list = typeof v === 'string' ? [v] : v
    if (!Array.isArray(list)) {
      bad(field, `expected a list of public keys (PEM text or key ids), got ${describe(v)}`)
      return []
    }
    const out: string[] = []
    list.forEach((k, i) => {
      if (typeof k !== 'string') return bad(`${field}[${i}]`, `expected a PEM public key or a key id, got ${describe(k)}`)
      const text = k.trim()
      try {
        parsePublicKey(text, `${field}[${i}]`)
        out.push(isKeyId(text) ? text : text + '\n')
      } catch {
        bad(`${field}[${i}]`, `not an ed25519 public key: give the key id (52 letters and digits, from \`cairn fleet keygen\`) or the PEM text of the .pub file`)
      }
    })
    return out
  }
  const operatorKeys = keys(doc.operatorKeys, 'operatorKeys')
  const validatorKeys = keys(doc.validatorKeys, 'validatorKeys')

  const owner = str(doc.owner, 'owner', false)
  if (owner !== undefined && !new RegExp(OWNER_PATTERN).test(owner)) bad('owner', `${JSON.stringify(owner)} is not a payout identity: letters, digits and : . _ @ - (at most 128)`)

  const hostname = str(doc.hostname, 'hostname', false)
  if (hostname !== undefined && !HOSTNAME_RE.test(hostname))
    bad('hostname', `${JSON.stringify(hostname)} is not a host name: lowercase letters, digits and -, at most 63, not starting or ending with -`)

  const timezone = str(doc.timezone, 'timezone', false)
  if (timezone !== undefined && !TIMEZONE_RE.test(timezone)) bad('timezone', `${JSON.stringify(timezone)} is not a time zone name such as Europe/Berlin or UTC`)

  let wifi: WifiSpec | undefined
  if (doc.wifi !== undefined && doc.wifi !== null) {
    if (!isObj(doc.wifi)) bad('wifi', `expected a mapping with ssid, psk and country, got ${describe(doc.wifi)}`)
    else {
      const w = doc.wifi
      unknownKeys(w, WIFI_KEYS, 'wifi.', bad)
      const ssid = str(w.ssid, 'wifi.ssid', true)
      if (ssid !== undefined && (Buffer.byteLength(ssid) < 1 || Buffer.byteLength(ssid) > 32)) bad('wifi.ssid', `must be 1 to 32 bytes, got ${Buffer.byteLength(ssid)}`)
      const psk = str(w.psk, 'wifi.psk', false)
      if (psk !== undefined && psk !== KEPT_SECRET && !/^[0-9a-fA-F]{64}$/.test(psk) && (psk.length < 8 || psk.length > 63 || !/^[\x20-\x7e]+$/.test(psk)))
        bad('wifi.psk', `a WPA passphrase is 8 to 63 printable ASCII characters (got ${psk.length}); leave psk out for an open network`)
      const country = str(w.country, 'wifi.country', true)
      if (country !== undefined && !COUNTRY_RE.test(country)) bad('wifi.country', `${JSON.stringify(country)} is not a two-letter country code such as DE, GB or US (it sets the legal radio channels)`)
      let hidden = false
      if (w.hidden !== undefined) {
        if (typeof w.hidden === 'boolean') hidden = w.hidden
        else bad('wifi.hidden', `expected true or false, got ${describe(w.hidden)}`)
      }
      if (ssid !== undefined && country !== undefined) wifi = { ssid, country, hidden, ...(psk !== undefined ? { psk } : {}) }
    }
  }

  const sshAuthorizedKeys: string[] = []
  if (doc.ssh !== undefined && doc.ssh !== null) {
    if (!isObj(doc.ssh)) bad('ssh', `expected "ssh: { authorizedKeys: [ssh-ed25519 AAAA… you@laptop] }", got ${describe(doc.ssh)}`)
    else {
      unknownKeys(doc.ssh, SSH_KEYS, 'ssh.', bad)
      const list = typeof doc.ssh.authorizedKeys === 'string' ? [doc.ssh.authorizedKeys] : doc.ssh.authorizedKeys
      if (list !== undefined && !Array.isArray(list)) bad('ssh.authorizedKeys', `expected a list of public SSH keys, got ${describe(list)}`)
      else if (list)
        list.forEach((k: unknown, i: number) => {
          const line = typeof k === 'string' ? k.trim() : ''
          if (!SSH_KEY_RE.test(line))
            bad(`ssh.authorizedKeys[${i}]`, 'expected one public key line such as "ssh-ed25519 AAAAC3Nz… you@laptop" (the contents of ~/.ssh/id_ed25519.pub, not the private key)')
          else sshAuthorizedKeys.push(line)
        })
    }
  }

  const nodeRed = nodeRedSpec(doc.nodeRed, bad)

  let agent: Obj = {}
  if (doc.agent !== undefined && doc.agent !== null) {
    if (!isObj(doc.agent)) bad('agent', `expected a mapping of agent settings (docs/configuration.md), got ${describe(doc.agent)}`)
    else agent = doc.agent
  }

  if (problems.length === 0 && fleet !== undefined && broker !== undefined) {
    const spec: ProvisionSpec = {
      fleet,
      broker,
      operatorKeys,
      validatorKeys,
      sshAuthorizedKeys,
      nodeRed,
      agent,
      ...(owner !== undefined ? { owner } : {}),
      ...(hostname !== undefined ? { hostname } : {}),
      ...(timezone !== undefined ? { timezone } : {}),
      ...(wifi !== undefined ? { wifi } : {}),
    }
    // The agent's own schema has the last word on everything it will read.
    try {
      resolveConfig([{ name: file, values: agentConfig(spec, PLACEHOLDER_PATHS) }])
    } catch (err) {
      const lines = (err as Error).message.split('\n').filter(l => l.startsWith('  '))
      throw new ProvisionError(lines.length ? lines.map(l => `${file}: agent setting ${l.trim()}`) : [`${file}: ${(err as Error).message}`])
    }
    return spec
  }
  throw new ProvisionError(problems)
}

/** Where the device keeps what provisioning writes (all on the data partition). */
export interface DevicePaths {
  readonly stateDir: string
  readonly etcDir: string
}
const PLACEHOLDER_PATHS: DevicePaths = { stateDir: '/var/lib/cairn/agent', etcDir: '/var/lib/cairn/etc' }

/** The agent configuration a spec stands for. Fields from `agent:` come first; what the
 * provisioning file names explicitly (fleet, broker, keys) wins over them. */
export function agentConfig(spec: ProvisionSpec, paths: DevicePaths): Record<string, unknown> {
  const extra = structuredClone(spec.agent) as Obj
  const extraBroker = isObj(extra.broker) ? extra.broker : {}
  const extraProof = isObj(extra.proof) ? extra.proof : {}
  const extraHw = isObj(extra.hw) ? extra.hw : {}
  const extraLocalApi = isObj(extra.localApi) ? extra.localApi : {}
  const { password: _password, ...brokerPublic } = spec.broker
  return {
    ...extra,
    fleet: spec.fleet,
    stateDir: paths.stateDir,
    operatorKeys: spec.operatorKeys.map((_, i) => `${paths.etcDir}/operators/${i + 1}.pub`),
    broker: {
      ...extraBroker,
      ...brokerPublic,
      ...(spec.broker.password !== undefined ? { passwordFile: `${paths.etcDir}/broker-password` } : {}),
      ...(spec.broker.ca !== undefined ? { ca: `${paths.etcDir}/broker-ca.pem` } : {}),
    },
    proof: {
      ...extraProof,
      validatorKeys: spec.validatorKeys.map((_, i) => `${paths.etcDir}/validators/${i + 1}.pub`),
      ...(spec.owner !== undefined ? { owner: spec.owner } : {}),
    },
    hw: { diskPaths: ['/', '/var/lib/cairn'], ...extraHw },
    // The local API at the top of the data partition, not in the agent's 0700 state dir:
    // Node-RED's user (cairn group) must reach the socket (0660) and token (0640).
    localApi: { socket: `${dirname(paths.stateDir)}/api.sock`, tokenFile: `${dirname(paths.stateDir)}/api.token`, ...extraLocalApi },
    // The agent runs unprivileged; root path units do the reboot (cairn-reboot.path) and
    // the re-provisioning (cairn-reprovision.path).
    system: { rebootCommand: ['touch', `${paths.stateDir}/reboot-requested`], reprovisionCommand: ['touch', `${paths.stateDir}/reprovision.request`] },
  }
}

function nodeRedSpec(v: unknown, bad: (field: string, msg: string) => void): NodeRedSpec {
  const defaults: NodeRedSpec = { enabled: true, lan: false }
  if (v === undefined || v === null) return defaults
  if (!isObj(v)) {
    bad('nodeRed', `expected a mapping such as "nodeRed: { enabled: true }", got ${describe(v)}`)
    return defaults
  }
  unknownKeys(v, NODE_RED_KEYS, 'nodeRed.', bad)
  const flag = (k: 'enabled' | 'lan', dflt: boolean): boolean => {
    if (v[k] === undefined || v[k] === null) return dflt
    if (typeof v[k] === 'boolean') return v[k]
    bad(`nodeRed.${k}`, `expected true or false, got ${describe(v[k])}`)
    return dflt
  }
  const enabled = flag('enabled', true)
  const lan = flag('lan', false)
  const hash = v.adminPasswordHash
  let adminPasswordHash: string | undefined
  if (hash !== undefined && hash !== null) {
    if (typeof hash !== 'string' || !BCRYPT_RE.test(hash.trim()))
      bad(
        'nodeRed.adminPasswordHash',
        'expected a bcrypt hash ($2b$10$ followed by 53 characters), never a plain password: make one with `npx node-red-admin hash-pw` (or `node-red admin hash-pw`) and quote it in the file',
      )
    else adminPasswordHash = hash.trim()
  }
  if (lan && enabled && adminPasswordHash === undefined && (hash === undefined || hash === null))
    bad(
      'nodeRed.lan',
      'LAN access to the Node-RED editor needs nodeRed.adminPasswordHash (a bcrypt hash of the admin password): an open editor on the network would let anyone on it run code on this device',
    )
  return { enabled, lan, ...(adminPasswordHash !== undefined ? { adminPasswordHash } : {}) }
}

function unknownKeys(obj: Obj, known: readonly string[], prefix: string, bad: (field: string, msg: string) => void): void {
  for (const k of Object.keys(obj)) {
    if (known.includes(k)) continue
    const near = known.find(c => c.toLowerCase() === k.toLowerCase() || editDistance(c.toLowerCase(), k.toLowerCase()) <= 2)
    bad(prefix + k, `unknown setting${near ? ` (did you mean ${prefix}${near}?)` : ''}; known here: ${known.join(', ')}`)
  }
}

function describe(v: unknown): string {
  if (v === null) return 'nothing'
  if (Array.isArray(v)) return 'a list'
  if (typeof v === 'object') return 'a mapping'
  return `${typeof v} ${JSON.stringify(v)}`
}

function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)])
  for (let j = 1; j <= b.length; j++) d[0]![j] = j
  for (let i = 1; i <= a.length; i++) for (let j = 1; j <= b.length; j++) d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1))
  return d[a.length]![b.length]!
}
