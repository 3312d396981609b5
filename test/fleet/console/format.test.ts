// The console's text helpers that are plain functions (fleet/console/format.ts); the
// views themselves are tested in Chromium (console.test.ts).

import t from 'tap'
import { execFileSync } from 'node:child_process'
import { ago, rate, shellWord, size } from '../../../fleet/console/format.js'

t.test('shellWord: what a shell reads back is the text itself', async t => {
  t.equal(shellWord('stable'), 'stable', 'a plain word as it is')
  t.equal(shellWord('1.4.0-beta.1+b7'), '1.4.0-beta.1+b7')
  for (const nasty of ['a b', "it's", '$(touch /tmp/x)', '`id`; rm -rf ~', 'x\ny', '', "''"]) {
    const word = shellWord(nasty)
    t.equal(execFileSync('sh', ['-c', `printf %s ${word}`], { encoding: 'utf8' }), nasty, `${JSON.stringify(nasty)} → ${word}`)
  }
})

t.test('sizes, rates and ages', async t => {
  t.equal(size(2_150_000), '2.1 MB')
  t.equal(size(999), '999 B')
  t.equal(rate(12_500), '13 kB/s')
  t.equal(size(null), '–')
  t.equal(ago(0, 3_600_000), '60 min ago')
})
