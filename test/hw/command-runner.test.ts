// The real runner against real processes (Node itself stands in for board tools),
// and the fixture runner's lookup by command line.
import t from 'tap'
import { createCommandRunner, createFixtureRunner } from '../../hw/index.js'

const node = process.execPath
/** Long enough for a Node start on a machine under any load the suite meets: these tests
 * are about output and exit status, not speed. */
const PATIENT = { timeoutMs: 120_000 }

t.test('real runner: stdout and exit status', async t => {
  const run = createCommandRunner(PATIENT)
  t.strictSame(await run.run(node, ['-e', 'process.stdout.write("throttled=0x0\\n")']), { code: 0, stdout: 'throttled=0x0\n' })
  t.strictSame(await run.run(node, ['-e', 'process.stdout.write("partial"); process.exit(3)']), { code: 3, stdout: 'partial' })
})

t.test('real runner: missing command and timeout are null, never a throw', async t => {
  const run = createCommandRunner({ timeoutMs: 300 })
  t.equal(await run.run('cairn-no-such-command-xyz', []), null)
  // A process that never ends can only come back by being killed at the timeout.
  const started = Date.now()
  t.equal(await run.run(node, ['-e', 'setInterval(() => console.log("tick"), 50)']), null, 'streams forever, like tegrastats: killed at the timeout')
  t.ok(Date.now() - started >= 300, 'not before the timeout')
})

t.test('real runner: runs in the C locale unless told otherwise', async t => {
  const out = await createCommandRunner(PATIENT).run(node, ['-e', 'process.stdout.write(String(process.env.LC_ALL))'])
  t.equal(out?.stdout, 'C')
  const own = await createCommandRunner({ ...PATIENT, env: { LC_ALL: 'de_DE.UTF-8' } }).run(node, ['-e', 'process.stdout.write(String(process.env.LC_ALL))'])
  t.equal(own?.stdout, 'de_DE.UTF-8')
})

t.test('fixture runner: exact command line, others missing', async t => {
  const run = createFixtureRunner({ 'vcgencmd get_throttled': 'throttled=0x50005\n' })
  t.strictSame(await run.run('vcgencmd', ['get_throttled']), { code: 0, stdout: 'throttled=0x50005\n' })
  t.equal(await run.run('vcgencmd', ['pmic_read_adc']), null)
  t.equal(await run.run('vcgencmd', []), null)
})
