// Strict SemVer 2.0.0 parsing and precedence (protocol/semver.ts): release selection and
// anti-rollback depend on it.

import t from 'tap'
import { compareSemver, formatSemver, isSemver, parseSemver } from '../../protocol/semver.js'

t.test('valid versions', async t => {
  for (const v of [
    '0.0.0',
    '1.2.3',
    '10.20.30',
    '1.1.2-prerelease+meta',
    '1.0.0-alpha',
    '1.0.0-alpha.beta.1',
    '1.0.0-0A.is.legal',
    '1.0.0+0.build.1-rc.10000aaa-kk-0.1',
    '1.0.0-x-y-z.--',
    '99999999999999.0.0',
  ]) {
    t.ok(isSemver(v), v)
    t.equal(formatSemver(parseSemver(v)!), v, `${v} round-trips`)
  }
})

t.test('invalid versions are refused, not guessed', async t => {
  for (const v of [
    '',
    '1',
    '1.2',
    'v1.2.3',
    '1.2.3.4',
    '01.2.3',
    '1.02.3',
    '1.2.03',
    '1.2.3-',
    '1.2.3-01',
    '1.2.3+',
    '1.2.3-a..b',
    '1.2.3 ',
    ' 1.2.3',
    '1.2.3-a_b',
    '-1.2.3',
    '1.2.3+a+b',
    '9999999999999999999.0.0',
  ]) {
    t.equal(parseSemver(v), null, JSON.stringify(v))
  }
  t.throws(() => compareSemver('1.0', '1.0.0'), TypeError)
})

t.test('precedence: the example chain from semver.org, item 11', async t => {
  const chain = ['1.0.0-alpha', '1.0.0-alpha.1', '1.0.0-alpha.beta', '1.0.0-beta', '1.0.0-beta.2', '1.0.0-beta.11', '1.0.0-rc.1', '1.0.0', '2.0.0', '2.1.0', '2.1.1', '10.0.0']
  for (let i = 0; i < chain.length; i++) {
    for (let j = 0; j < chain.length; j++) {
      t.equal(compareSemver(chain[i]!, chain[j]!), Math.sign(i - j), `${chain[i]} vs ${chain[j]}`)
    }
  }
})

t.test('build metadata is ignored; numbers compare as numbers', async t => {
  t.equal(compareSemver('1.0.0+build.1', '1.0.0+build.2'), 0)
  t.equal(compareSemver('1.0.0-rc.1+x', '1.0.0-rc.1'), 0)
  t.equal(compareSemver('1.10.0', '1.9.0'), 1, '10 > 9, not "10" < "9"')
  t.equal(compareSemver('1.0.0-2', '1.0.0-10'), -1, 'numeric pre-release identifiers numerically')
  t.equal(compareSemver('1.0.0-a10', '1.0.0-a9'), -1, 'alphanumeric identifiers in ASCII order')
  t.equal(compareSemver('1.0.0-1', '1.0.0-a'), -1, 'numeric before alphanumeric')
  t.equal(compareSemver('1.0.0-B', '1.0.0-a'), -1, 'ASCII: uppercase sorts first')
})
