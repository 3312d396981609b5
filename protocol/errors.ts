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
  // OTA updater (ota/updater.ts, ota/ota-commands.ts)
  'OTA_DISABLED', // updates are off on this device (ota.enabled, or not started by the launcher)
  // Content cache (agent/cache/)
  'NO_SPACE', // quota reached with nothing evictable, or the disk is full: nothing was stored
  'CONTENT_MISMATCH', // fetched bytes differ from the content id (hash) or the expected length: refused, nothing stored
  'NOT_FOUND', // no such object in the cache
  // Tasks (agent/task/): rejection reasons and failure codes in task updates and receipts
  'UNSUPPORTED', // no executor for this task type on this device, or the executor cannot run these params here
  'BUSY', // the task queue is full (tasks.maxQueue)
  'TOO_HOT', // thermally throttled or over tasks.maxTempC, and the deadline would pass before it cools
  'DUPLICATE', // a task with this id exists already: its stored state is sent back, it never runs twice
  'UNKNOWN_TASK', // cancel of a task id this device does not know
  'INTERRUPTED', // the agent stopped while the task ran (not idempotent, so not resumed)
  'TIMEOUT', // the task ran past min(deadline, tasks.maxRunS)
  'CANCELLED', // cancelled by its dispatcher or an operator
  // Inference (agent/infer/)
  'BAD_INPUT', // an input image or tensor that cannot be used: corrupt, too many pixels, wrong shape or dtype
  'MODEL_INVALID', // a model package that cannot be unpacked or loaded (bad tar, model.json, metadata, weights)
  'WORKER_CRASHED', // the isolated inference process died during the task; it is restarted for the next one
  'MEMORY_LIMIT', // the inference process went over its memory limit and was killed
  // Local API (agent/local-api/) and the GPIO it lends
  'UNKNOWN_OP', // a local API request names an op this agent does not have
  'PIN_BUSY', // the pin is the agent's own (status LED, button), open by another client, or held by another program
  'GPIO', // the GPIO driver refused: wrong direction, an I/O error, a closed line
  'UNAUTHORIZED', // missing or wrong local API token (HTTP 401 on the upgrade)
  'UNAVAILABLE', // the local API is full (maxClients) or not listening: try again later
  'DISCONNECTED', // the local API connection closed before the reply came
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
