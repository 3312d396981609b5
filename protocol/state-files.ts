// Names of files in the agent's state dir that other programs on the device read or
// write (cairn-provision, the self-test, the agent itself): one place, so the writer and
// the reader cannot drift apart.

/** The device's Ed25519 key pair (PEM); `<name>.pub` beside it holds the public half. */
export const DEVICE_KEY_FILE = 'device.key'

/** Written by cairn-provision when the provisioning file was refused, removed when one applies; the status LED shows it. */
export const PROVISION_ERROR_FILE = 'provision-error'
