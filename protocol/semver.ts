// Strict Semantic Versioning 2.0.0 (semver.org): parse and compare, nothing more.
// Release selection and anti-rollback hinge on this comparison, so it refuses anything
// the spec does not allow ("v1.2.3", "1.2", "01.2.3", "1.2.3-01") instead of guessing.

import { SEMVER_PATTERN } from './semver-pattern.mjs'

export { SEMVER_PATTERN }

export interface SemVer {
  readonly major: number
  readonly minor: number
  readonly patch: number
  /** Dot-separated pre-release identifiers; numeric ones as numbers. Empty = a release. */
  readonly prerelease: ReadonlyArray<string | number>
  /** Build metadata: kept for display, ignored by precedence (spec item 10). */
  readonly build: ReadonlyArray<string>
}

const SEMVER_RE = new RegExp(SEMVER_PATTERN)

/** Parses a version, or returns null when it is not strict SemVer 2.0.0. */
export function parseSemver(text: string): SemVer | null {
  const m = SEMVER_RE.exec(text)
  if (!m) return null
  const major = Number(m[1])
  const minor = Number(m[2])
  const patch = Number(m[3])
  if (![major, minor, patch].every(Number.isSafeInteger)) return null
  const prerelease: Array<string | number> = []
  for (const id of m[4]?.split('.') ?? []) {
    if (/^\d+$/.test(id)) {
      const n = Number(id)
      if (!Number.isSafeInteger(n)) return null
      prerelease.push(n)
    } else prerelease.push(id)
  }
  return { major, minor, patch, prerelease, build: m[5]?.split('.') ?? [] }
}

export function isSemver(text: string): boolean {
  return parseSemver(text) !== null
}

/** Like parseSemver, but throws a TypeError naming `what` (for inputs that must be valid). */
function mustParseSemver(text: string, what: string): SemVer {
  const v = parseSemver(text)
  if (!v) throw new TypeError(`${what}: ${JSON.stringify(text)} is not a semantic version (MAJOR.MINOR.PATCH[-PRE][+BUILD])`)
  return v
}

/** Precedence per spec item 11: negative when a < b, 0 when equal (build ignored). */
export function compareSemver(a: SemVer | string, b: SemVer | string): number {
  const x = typeof a === 'string' ? mustParseSemver(a, 'version') : a
  const y = typeof b === 'string' ? mustParseSemver(b, 'version') : b
  const core = x.major - y.major || x.minor - y.minor || x.patch - y.patch
  if (core !== 0) return Math.sign(core)
  // A pre-release sorts before its release.
  if (x.prerelease.length === 0 || y.prerelease.length === 0) return Math.sign(y.prerelease.length - x.prerelease.length)
  const n = Math.min(x.prerelease.length, y.prerelease.length)
  for (let i = 0; i < n; i++) {
    const p = x.prerelease[i]!
    const q = y.prerelease[i]!
    if (p === q) continue
    // Numeric identifiers sort before alphanumeric ones, numerically among themselves;
    // alphanumeric ones compare in ASCII order.
    if (typeof p === 'number' && typeof q === 'number') return Math.sign(p - q)
    if (typeof p === 'number') return -1
    if (typeof q === 'number') return 1
    return p < q ? -1 : 1
  }
  return Math.sign(x.prerelease.length - y.prerelease.length)
}

export function formatSemver(v: SemVer): string {
  const pre = v.prerelease.length ? `-${v.prerelease.join('.')}` : ''
  const build = v.build.length ? `+${v.build.join('.')}` : ''
  return `${v.major}.${v.minor}.${v.patch}${pre}${build}`
}
