// Accelerator inventory paths that the fixture boards do not cover.
import t from 'tap'
import { accelerators, createFixtureRunner } from '../../hw/index.js'

t.test('NVIDIA without /proc/driver/nvidia: nvidia-smi names and sizes the GPUs', async t => {
  const run = createFixtureRunner({
    'nvidia-smi --query-gpu=name,memory.total --format=csv,noheader': 'NVIDIA GeForce RTX 3060, 12288 MiB\nNVIDIA RTX A2000 12GB, 12282 MiB\n',
  })
  t.strictSame(await accelerators({ root: t.testdir({}), run }), [
    { kind: 'nvidia-gpu', name: 'NVIDIA GeForce RTX 3060', source: 'nvidia-smi', memoryBytes: 12288 * 1024 * 1024 },
    { kind: 'nvidia-gpu', name: 'NVIDIA RTX A2000 12GB', source: 'nvidia-smi', memoryBytes: 12282 * 1024 * 1024 },
  ])
})

t.test('nvidia-smi errors are not GPUs', async t => {
  const run = createFixtureRunner({
    'nvidia-smi --query-gpu=name,memory.total --format=csv,noheader': "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n",
  })
  t.strictSame(await accelerators({ root: t.testdir({}), run }), [])
})

t.test('Jetson without devfreq: the nvhost GPU node is enough', async t => {
  const root = t.testdir({ proc: { 'device-tree': { model: 'NVIDIA Jetson Nano Developer Kit\0' } }, dev: { 'nvhost-ctrl-gpu': '' } })
  t.strictSame(await accelerators({ root, run: createFixtureRunner({}) }), [{ kind: 'nvidia-gpu', name: 'NVIDIA Jetson Nano Developer Kit integrated GPU', source: '/dev/nvhost-ctrl-gpu' }])
})

t.test('PCIe Coral, two Hailo devices, accel class without uevent driver', async t => {
  const root = t.testdir({
    dev: { apex_0: '', hailo0: '', hailo1: '', 'hailo-not': '' },
    sys: { class: { accel: { accel0: { dev: '261:0\n' }, accel1: { dev: 'garbage' } } } },
  })
  t.strictSame(await accelerators({ root, run: createFixtureRunner({}) }), [
    { kind: 'hailo', name: 'Hailo accelerator (hailo0)', source: '/dev/hailo0' },
    { kind: 'hailo', name: 'Hailo accelerator (hailo1)', source: '/dev/hailo1' },
    { kind: 'coral-tpu', name: 'Coral Edge TPU, PCIe (apex_0)', source: '/dev/apex_0' },
    { kind: 'accel', name: 'accel0', source: '/sys/class/accel/accel0' },
  ])
})

t.test('USB Coral before its firmware is loaded (1a6e:089a)', async t => {
  const root = t.testdir({ sys: { bus: { usb: { devices: { '1-1.3': { idVendor: '1a6e\n', idProduct: '089a\n' } } } } } })
  t.strictSame(await accelerators({ root, run: createFixtureRunner({}) }), [{ kind: 'coral-tpu', name: 'Coral Edge TPU, USB (1-1.3)', source: '/sys/bus/usb/devices/1-1.3' }])
})
