// The console's URLs: #/ (overview), #/devices?… (the table, its query in the URL so a view
// can be linked), #/devices/<id> (one device), #/rollouts (versions, updates, the pause), #/validators,
// #/accounts (admins).

export type Route = { view: 'overview' } | { view: 'devices'; query: URLSearchParams } | { view: 'device'; id: string } | { view: 'rollouts' } | { view: 'validators' } | { view: 'accounts' }

export function parseRoute(hash: string): Route {
  const [path = '', qs = ''] = hash.replace(/^#/, '').split('?')
  const parts = path.split('/').filter(Boolean)
  if (parts[0] === 'devices' && parts[1]) return { view: 'device', id: decodeURIComponent(parts[1]) }
  if (parts[0] === 'devices') return { view: 'devices', query: new URLSearchParams(qs) }
  if (parts[0] === 'rollouts') return { view: 'rollouts' }
  if (parts[0] === 'validators') return { view: 'validators' }
  if (parts[0] === 'accounts') return { view: 'accounts' }
  return { view: 'overview' }
}

export function devicesHref(q: Record<string, string | number | undefined>): string {
  const qs = new URLSearchParams()
  for (const [k, v] of Object.entries(q)) if (v !== undefined && v !== '') qs.set(k, String(v))
  return `#/devices${qs.size > 0 ? `?${qs}` : ''}`
}

export const deviceHref = (id: string) => `#/devices/${encodeURIComponent(id)}`
