// Typed errors with stable codes. Callers branch on `code`, never on message text;
// the MQTT edge turns a CairnError into the reply envelope's `error` object.

export const ErrorCodes = [
  'BAD_JSON',
  'BAD_REQUEST',
  'BAD_SIGNATURE',
  'UNTRUSTED_KEY',
  'WRONG_TARGET',
  'EXPIRED',
  'NOT_YET_VALID',
  'TTL_TOO_LONG',
  'REPLAY',
  'TOO_LARGE',
  'UNKNOWN_COMMAND',
  'INVALID_CONFIG',
  'LAST_OPERATOR_KEY',
  'STATE_DIR',
  'LOCKED',
  'INTERNAL',
  // OTA release channel (ota/tuf-*.ts, ota/fetcher.ts)
  'TUF_METADATA', // release metadata refused: signatures, versions, expiry, hashes
  'TUF_KEYS', // signing keys missing or below a role's threshold (cairn release)
  'DOWNLOAD', // network or HTTP failure: transient, try again later
  'TARGET_MISMATCH', // a downloaded file's length or SHA-256 differs from the signed metadata
  // OTA updater (ota/updater.ts, ota/commands.ts)
  'OTA_DISABLED', // updates are off on this device (ota.enabled, or not started by the launcher)
] as const
export type ErrorCode = (typeof ErrorCodes)[number]

export class CairnError extends Error {
  readonly code: ErrorCode
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.code = code
    this.name = 'CairnError'
  }
}

export function isCairnError(err: unknown): err is CairnError {
  return err instanceof CairnError
}

/** The wire shape of an error, for reply envelopes and logs. */
export function errorBody(err: unknown): { code: ErrorCode; message: string } {
  if (isCairnError(err)) return { code: err.code, message: err.message }
  return { code: 'INTERNAL', message: err instanceof Error ? err.message : String(err) }
}
