// /proc parsers on the format variations real kernels produce.
import t from 'tap'
import { busyPercent, buildCpuSample, parseProcStat } from '../../hw/cpu.js'
import { buildNetSample, parseNetDev } from '../../hw/net.js'
import { parseLoadavg, parseMeminfo, parseUptime } from '../../hw/proc.js'

t.test('/proc/stat: old 4-field kernels, guest time not double counted', async t => {
  const s = parseProcStat('cpu  100 0 50 850\ncpu0 100 0 50 850\nintr 1 2 3\n')
  t.strictSame(s?.all, { total: 1000, idle: 850 })
  // guest (9th) and guest_nice (10th) are already inside user and nice.
  const g = parseProcStat('cpu  10 1 2 80 3 1 1 2 9 1\n')
  t.strictSame(g?.all, { total: 100, idle: 83 })
  t.equal(parseProcStat('intr 1 2 3\n'), undefined)
})

t.test('busy percent: exact, and undefined when counters stall or go back', async t => {
  t.equal(busyPercent({ total: 1000, idle: 800 }, { total: 1400, idle: 1100 }), 25)
  t.equal(busyPercent({ total: 1000, idle: 800 }, { total: 1000, idle: 800 }), undefined)
  t.equal(busyPercent({ total: 1000, idle: 800 }, { total: 1100, idle: 790 }), undefined, 'iowait stepped back')
  t.equal(busyPercent({ total: 1000, idle: 800 }, { total: 900, idle: 850 }), undefined)
})

t.test('a core that went offline between samples (Jetson hotplug) just drops out', async t => {
  const a = parseProcStat('cpu  0 0 0 200\ncpu0 0 0 0 100\ncpu1 0 0 0 100\n')
  const b = parseProcStat('cpu  50 0 0 250\ncpu0 50 0 0 150\n')
  t.strictSame(buildCpuSample(a, b, new Map([[0, 1479]])), { percent: 50, cores: [{ cpu: 0, percent: 50, mhz: 1479 }] })
})

t.test('/proc/net/dev: no space after the colon, loopback skipped, malformed rows ignored', async t => {
  const text =
    'Inter-|   Receive                                                |  Transmit\n' +
    ' face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n' +
    '    lo:    3193      29    0    0    0     0          0         0     3193      29    0    0    0     0       0          0\n' +
    '  eth0:12345678901 9 0 0 0 0 0 0 42 1 0 0 0 0 0 0\n' +
    '  bad0: 1 2 3\n'
  t.strictSame([...parseNetDev(text)], [['eth0', { rxBytes: 12345678901, txBytes: 42 }]])
})

t.test('net rates: counter reset gives no rate for that direction', async t => {
  const prev = { at: 0, counters: new Map([['eth0', { rxBytes: 5000, txBytes: 100 }]]) }
  const cur = {
    at: 2000,
    counters: new Map([
      ['eth0', { rxBytes: 100, txBytes: 300 }],
      ['wlan0', { rxBytes: 1, txBytes: 1 }],
    ]),
  }
  t.strictSame(buildNetSample(prev, cur), [
    { iface: 'eth0', rxBytes: 100, txBytes: 300, txBytesPerS: 100 },
    { iface: 'wlan0', rxBytes: 1, txBytes: 1 },
  ])
})

t.test('meminfo: kernels without MemAvailable, no swap line, nonsense', async t => {
  const old = parseMeminfo('MemTotal:        1000 kB\nMemFree:          200 kB\nBuffers:          100 kB\nCached:           300 kB\n')
  t.strictSame(old, { totalBytes: 1024000, availableBytes: 614400, usedPercent: 40 })
  t.equal(parseMeminfo('MemTotal: 0 kB\nMemAvailable: 0 kB\n'), undefined)
  t.equal(parseMeminfo('MemTotal: 100 kB\nMemAvailable: 200 kB\n'), undefined, 'available above total is not memory')
})

t.test('uptime and loadavg', async t => {
  t.equal(parseUptime('352811.48 1385270.12\n'), 352811.48)
  t.equal(parseUptime('352811.48\n'), undefined)
  t.strictSame(parseLoadavg('0.42 0.31 0.25 2/213 14567\n'), [0.42, 0.31, 0.25])
  t.equal(parseLoadavg('0.42 0.31\n'), undefined)
})
