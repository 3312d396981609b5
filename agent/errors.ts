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
