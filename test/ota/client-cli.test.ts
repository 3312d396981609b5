// `cairn release …` through the built bundle (dist/cairn.mjs), as operators and the
// tuf-conformance suite run it: the repository commands, `serve`, and the conformance
// client CLI (init, refresh, download; exit 0 on success, 1 on failure).

import t from 'tap'
import { spawn } from 'node:child_process'
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { cairnCli as cairn, payload, tmp } from '../helpers/release.js'

const bundle = new URL('../../dist/cairn.mjs', import.meta.url).pathname

t.test('operator workflow and the conformance client', async t => {
  const dir = tmp()
  const repo = join(dir, 'repo')
  const help = await cairn(['release', '--help'])
  t.equal(help.code, 0)
  t.match(help.stdout, /cairn release client --metadata-dir D init ROOT_FILE/)

  let r = await cairn(['release', 'init', '--repo', repo, '--expiry', 'timestamp=2d'])
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, /root 2 of 3/)
  t.match(JSON.parse(readFileSync(join(repo, 'cairn-release.json'), 'utf8')), { expiry: { timestamp: '2d' } })
  const file = payload(dir, 'cairn-agent.tar', 20_000)
  r = await cairn(['release', 'add', '--repo', repo, '--version', '1.1.0', '--channel', 'stable', '--arch', 'arm64,x64', '--board', 'rpi4,rpi5', '--rollout', '30', '--min-version', '1.0.0', file])
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, /added cairn\/1\.1\.0\/cairn-agent\.tar \(20000 bytes/)
  r = await cairn(['release', 'list', '--repo', repo, '--json'])
  t.match(JSON.parse(r.stdout), [{ path: 'cairn/1.1.0/cairn-agent.tar', info: { arch: ['arm64', 'x64'], boards: ['rpi4', 'rpi5'], rollout: 30, minVersion: '1.0.0' } }])
  t.equal((await cairn(['release', 'add', '--repo', repo, '--version', 'nope', '--channel', 'stable', file])).code, 2, 'bad input: exit 2')
  t.equal((await cairn(['release', 'set-rollout', '--repo', repo, '--version', '1.1.0', '--pct', '60'])).code, 0)
  t.equal((await cairn(['release', 'refresh', '--repo', repo])).code, 0)
  t.equal((await cairn(['release', 'rotate', '--repo', repo, '--role', 'timestamp'])).code, 0)
  const noKeys = await cairn(['release', 'refresh', '--repo', repo, '--keys', join(dir, 'empty')])
  t.equal(noKeys.code, 1)
  t.match(noKeys.stderr, /signing timestamp needs 1 of its keys, 0 found/)

  const serve = spawn(process.execPath, [bundle, 'release', 'serve', '--repo', repo, '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => serve.kill('SIGKILL'))
  const url = await new Promise<string>((resolve, reject) => {
    let buf = ''
    serve.stdout!.on('data', (d: Buffer) => {
      buf += d.toString()
      const m = /on (http:\/\/127\.0\.0\.1:\d+)/.exec(buf)
      if (m) resolve(m[1]!)
    })
    serve.once('exit', () => reject(new Error(`serve exited: ${buf}`)))
  })

  const md = join(dir, 'client', 'metadata')
  const out = join(dir, 'client', 'targets')
  const client = (...args: string[]) => cairn(['release', 'client', ...args])
  const common = ['--metadata-dir', md, '--metadata-url', `${url}/metadata`]
  const download = ['--target-name', 'cairn/1.1.0/cairn-agent.tar', '--target-base-url', `${url}/targets`, '--target-dir', out, 'download']

  t.equal((await client('--metadata-dir', md, 'init', join(repo, 'published/metadata/1.root.json'))).code, 0, 'init')
  t.same(readdirSync(md), ['root.json'], 'init only copies the root, no requests')
  r = await client(...common, 'refresh')
  t.equal(r.code, 0, r.stderr)
  t.same(readdirSync(md).sort(), ['root.json', 'snapshot.json', 'targets.json', 'timestamp.json'], 'non-versioned file names')
  t.equal(JSON.parse(readFileSync(join(md, 'root.json'), 'utf8')).signed.version, 2, 'followed the rotation')
  r = await client(...common, ...download)
  t.equal(r.code, 0, r.stderr)
  const saved = join(out, encodeURIComponent('cairn/1.1.0/cairn-agent.tar'))
  t.ok(readFileSync(saved).equals(readFileSync(file)))
  r = await client(...common, ...download)
  t.match(r.stdout, /already downloaded/, 'cached artifact not fetched again')

  t.equal((await client(...common, '--target-name', 'cairn/9.9.9/none.tar', '--target-base-url', `${url}/targets`, '--target-dir', out, 'download')).code, 1, 'unknown target: exit 1')
  t.equal((await client('--metadata-dir', join(dir, 'fresh'), '--metadata-url', `${url}/metadata`, 'refresh')).code, 1, 'refresh without init: exit 1')
  t.equal((await client('--metadata-dir', md, 'bogus')).code, 1, 'unknown command: exit 1')
  t.equal((await client('--metadata-dir', md, '--nope', 'refresh')).code, 1, 'unknown flag: exit 1')

  // A tampered timestamp (one byte of the signed part changed) fails refresh with exit 1.
  const ts = join(repo, 'published/metadata/timestamp.json')
  const good = readFileSync(ts, 'utf8')
  writeFileSync(
    ts,
    good.replace(/"expires": "(\d{4})/, (_m, y: string) => `"expires": "${Number(y) + 1}`),
  )
  r = await client(...common, 'refresh')
  t.equal(r.code, 1)
  t.match(r.stderr, /signed by 0\/1 keys/)
  writeFileSync(ts, good)
  t.equal((await client(...common, 'refresh')).code, 0)
  t.ok(existsSync(saved))
})
