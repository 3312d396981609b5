// Small pieces every view uses: loading from the API, showing its error.

import { useEffect, useState } from 'preact/hooks'

/** Loads `load()` now and whenever `deps` change; keeps the last good value while reloading. */
export function useLoad<T>(load: () => Promise<T>, deps: unknown[]): { value: T | undefined; error: string | undefined; loading: boolean } {
  const [state, setState] = useState<{ value: T | undefined; error: string | undefined; loading: boolean }>({ value: undefined, error: undefined, loading: true })
  useEffect(() => {
    let live = true
    setState(s => ({ ...s, loading: true }))
    load().then(
      value => live && setState({ value, error: undefined, loading: false }),
      (err: unknown) => live && setState(s => ({ value: s.value, error: err instanceof Error ? err.message : String(err), loading: false })),
    )
    return () => {
      live = false
    }
  }, deps)
  return state
}

export function Problem(props: { error: string | undefined }) {
  return props.error ? (
    <p class="error" role="alert">
      {props.error}
    </p>
  ) : null
}
