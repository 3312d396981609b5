import t from 'tap'
import { chmodSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { loadOrCreateIdentity, readIdentity } from '../../protocol/identity.js'
import { generateKeyPair, isKeyId, keyIdOf, parsePublicKey, publicKeyFromKeyId, readKeyPairFile, readPublicKeyFile, writeKeyPairFiles } from '../../protocol/keys.js'

const tmp = () => mkdtempSync(join(tmpdir(), 'cairn-keys-'))

t.test('first start makes a 0600 device key; the id is stable and topic-safe', async t => {
  const dir = join(tmp(), 'state')
  const a = loadOrCreateIdentity(dir)
  t.equal(a.created, true)
  t.equal(statSync(join(dir, 'device.key')).mode & 0o777, 0o600, 'private key is 0600')
  t.equal(statSync(dir).mode & 0o777, 0o700, 'state dir is 0700')
  t.match(a.identity.deviceId, /^[a-z2-7]{52}$/)
  t.notMatch(a.identity.deviceId, /[/+#]/)
  const b = loadOrCreateIdentity(dir)
  t.equal(b.created, false)
  t.equal(b.identity.deviceId, a.identity.deviceId, 'same id on the next start')
  t.equal(readIdentity(dir).deviceId, a.identity.deviceId)
  t.equal(keyIdOf(publicKeyFromKeyId(a.identity.deviceId)), a.identity.deviceId, 'the id is the public key')
})

t.test('a private key readable by others is refused, with the fix in the message', async t => {
  const dir = tmp()
  writeKeyPairFiles(join(dir, 'k'), generateKeyPair())
  chmodSync(join(dir, 'k'), 0o644)
  t.throws(() => readKeyPairFile(join(dir, 'k')), /readable by others .*chmod 600/)
})

t.test('a public key given where the private key is needed says so, not "chmod 600"', async t => {
  const dir = tmp()
  const pair = generateKeyPair()
  writeKeyPairFiles(join(dir, 'k'), pair)
  t.throws(() => readKeyPairFile(join(dir, 'k.pub')), { code: 'BAD_REQUEST', message: /k\.pub: that is a public key; this needs the private key file \(.*\/k, without \.pub\)$/ })
  writeFileSync(join(dir, 'id'), pair.keyId + '\n', { mode: 0o600 })
  t.throws(() => readKeyPairFile(join(dir, 'id')), /that is a public key/, 'a bare key id too')
  t.equal(readKeyPairFile(join(dir, 'k')).keyId, pair.keyId, 'the private key still reads')
})

t.test('keygen never overwrites a key', async t => {
  const dir = tmp()
  writeKeyPairFiles(join(dir, 'k'), generateKeyPair())
  const before = readFileSync(join(dir, 'k'), 'utf8')
  t.throws(() => writeKeyPairFiles(join(dir, 'k'), generateKeyPair()), /already exists/)
  t.equal(readFileSync(join(dir, 'k'), 'utf8'), before)
})

t.test('public keys parse from PEM or key id; anything else is a clear error', async t => {
  const dir = tmp()
  const pair = generateKeyPair()
  writeKeyPairFiles(join(dir, 'k'), pair)
  t.equal(keyIdOf(readPublicKeyFile(join(dir, 'k.pub'))), pair.keyId)
  t.equal(keyIdOf(parsePublicKey(pair.keyId + '\n', 'x')), pair.keyId)
  writeFileSync(join(dir, 'junk.pub'), 'hello')
  t.throws(() => readPublicKeyFile(join(dir, 'junk.pub')), /not a PEM public key or key id/)
  t.throws(() => readPublicKeyFile(join(dir, 'missing.pub')), /ENOENT/)
  t.equal(isKeyId('a'.repeat(52)), true)
  t.equal(isKeyId('a'.repeat(51) + 'b'), false, 'non-canonical trailing bits')
})

t.test('a temp file left by a crash cannot make the new key world-readable', async t => {
  const dir = tmp()
  writeFileSync(join(dir, `.k.${process.pid}.tmp`), 'old', { mode: 0o644 })
  chmodSync(join(dir, `.k.${process.pid}.tmp`), 0o644)
  writeKeyPairFiles(join(dir, 'k'), generateKeyPair())
  t.equal(statSync(join(dir, 'k')).mode & 0o777, 0o600)
})
