// The operator's key in this browser (signer.ts): made here or imported from a
// `cairn keygen` file, shown by its key id, forgotten on request. Every view that signs
// (a device's commands, the rollouts page's pause) shows it and is told of changes.

import { useEffect, useState } from 'preact/hooks'
import { canSign, forgetKey, importKey, loadKey, makeKey, type OperatorKey } from './signer.js'
import { Problem } from './ui.js'

const errorText = (err: unknown) => (err instanceof Error ? err.message : String(err))

export function KeyBox(props: { onKey: (key: OperatorKey | null) => void }) {
  const [key, setKey] = useState<OperatorKey | null | undefined>(undefined)
  const [error, setError] = useState<string>()
  const use = (k: OperatorKey | null) => {
    setKey(k)
    props.onKey(k)
  }
  const [able, setAble] = useState<boolean>()
  useEffect(() => {
    canSign()
      .then(ok => {
        setAble(ok)
        return ok ? loadKey() : undefined
      })
      .then(
        k => use(k ?? null),
        (err: unknown) => (use(null), setError(errorText(err))),
      )
  }, [])
  const act = (run: () => Promise<OperatorKey | null>) => {
    setError(undefined)
    run().then(use, (err: unknown) => setError(errorText(err)))
  }
  const onFile = (e: Event) => {
    const file = (e.currentTarget as HTMLInputElement).files?.[0]
    if (file) act(async () => importKey(await file.text()))
  }
  return (
    <div class="operator-key">
      {key === undefined ? null : !able ? (
        <p class="quiet">This browser cannot sign: it needs Web Crypto with Ed25519.</p>
      ) : key === null ? (
        <p>
          No operator key in this browser.{' '}
          <button type="button" data-action="make-key" onClick={() => act(makeKey)}>
            Make a key here
          </button>{' '}
          <label class="file">
            or import a key file (<span class="mono">cairn keygen</span>) <input type="file" data-action="import-key" accept=".pem,.key,text/plain" onChange={onFile} />
          </label>
        </p>
      ) : (
        <p>
          Signing as{' '}
          <span class="mono key-id" data-key-id={key.keyId} title={key.keyId}>
            {key.keyId}
          </span>{' '}
          ({key.source}, kept in this browser only; it cannot be exported).{' '}
          <button
            type="button"
            data-action="forget-key"
            onClick={() => window.confirm('Forget this key? Commands signed with it can no longer be sent from this browser.') && act(async () => (await forgetKey(), null))}
          >
            Forget it
          </button>
          <br />
          <small class="quiet">
            A device obeys this key once it trusts its id: put the id in a file and start the agent with <span class="mono">--operator-key FILE</span>, or send <span class="mono">operator-add</span>{' '}
            with it from a key the device trusts.
          </small>
        </p>
      )}
      <Problem error={error} />
    </div>
  )
}
