// Node-RED's settings.js on Cairn OS, from the nodeRed part of cairn.yaml. The editor
// listens on 127.0.0.1 (reach it through `ssh -L 1880:127.0.0.1:1880`) unless LAN access
// was asked for, which the spec only accepts together with a bcrypt admin password hash:
// never an open editor on the network. Pure: provisioning writes what this returns.

import type { NodeRedSpec } from './spec.js'

const NODE_RED_PORT = 1880

/** The user dir (flows, credentials, installed nodes) on the data partition. */

export function nodeRedSettings(spec: NodeRedSpec, at: Date): string {
  const host = spec.lan ? '0.0.0.0' : '127.0.0.1'
  const hash = spec.adminPasswordHash
  const lines = [
    `// Written by cairn-provision from cairn.yaml (nodeRed), ${at.toISOString()}.`,
    '// To change it, put a new cairn.yaml on the CAIRN drive and reboot (docs/image.md).',
    'module.exports = {',
    `  uiHost: ${JSON.stringify(host)},`,
    `  uiPort: ${NODE_RED_PORT},`,
    "  flowFile: 'flows.json',",
    // The admin password also guards the HTTP endpoints flows publish (a status page)
    ...(hash !== undefined
      ? [
          `  adminAuth: { type: 'credentials', users: [{ username: 'admin', password: ${JSON.stringify(hash)}, permissions: '*' }] },`,
          ...(spec.lan ? [`  httpNodeAuth: { user: 'admin', pass: ${JSON.stringify(hash)} },`] : []),
        ]
      : []),
    // an appliance: no update checks or diagnostics calling out, no projects (git)
    '  diagnostics: { enabled: false, ui: false },',
    '  telemetry: { enabled: false },',
    '  editorTheme: { projects: { enabled: false }, tours: false },',
    "  logging: { console: { level: 'info', metrics: false, audit: false } },",
    '}',
    '',
  ]
  return lines.join('\n')
}
