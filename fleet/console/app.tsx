// The fleet console: a single page on `cairn fleet serve` (docs/console.md). Six views,
// each a URL (#/, #/devices?…, #/devices/<id>, #/rollouts, #/validators, #/accounts for
// admins), each reloading from the API when the
// live stream says something it shows changed. Every string a device sent (board, model,
// version, labels, event data, problems) is rendered as text by Preact, never as HTML.

import './style.css'
import { render } from 'preact'
import { useEffect, useState } from 'preact/hooks'
import * as api from './api.js'
import { Overview } from './overview.js'
import { DeviceTable } from './device-table.js'
import { DevicePage } from './device-page.js'
import { closeLive, useLiveState } from './live.js'
import { Problem } from './ui.js'
import { parseRoute, type Route } from './route.js'
import { RolloutsPage } from './rollouts.js'
import { ValidatorsPage } from './validators.js'
import { AccountsPage } from './accounts.js'

function useRoute(): Route {
  const [route, setRoute] = useState(() => parseRoute(location.hash))
  useEffect(() => {
    const on = () => setRoute(parseRoute(location.hash))
    window.addEventListener('hashchange', on)
    return () => window.removeEventListener('hashchange', on)
  }, [])
  return route
}

function App(props: { session: api.Session; signOut: () => void }) {
  const route = useRoute()
  const live = useLiveState()
  const admin = props.session.account?.role === 'admin'
  const [fleet, setFleet] = useState<string>('')
  useEffect(() => {
    api
      .fleet()
      .then(f => {
        setFleet(f.fleet)
        document.title = `Cairn fleet ${f.fleet}`
      })
      .catch(() => {})
  }, [])
  return (
    <>
      <header class="top">
        <a class="brand" href="#/">
          Cairn fleet <span class="fleet-name">{fleet}</span>
        </a>
        <nav>
          <a href="#/" class={route.view === 'overview' ? 'on' : ''}>
            Overview
          </a>
          <a href="#/devices" class={route.view === 'devices' || route.view === 'device' ? 'on' : ''}>
            Devices
          </a>
          <a href="#/rollouts" class={route.view === 'rollouts' ? 'on' : ''}>
            Rollouts
          </a>
          <a href="#/validators" class={route.view === 'validators' ? 'on' : ''}>
            Validators
          </a>
          {admin && (
            <a href="#/accounts" class={route.view === 'accounts' ? 'on' : ''}>
              Accounts
            </a>
          )}
        </nav>
        {props.session.account && (
          <span class="who">
            <span data-account={props.session.account.name}>{props.session.account.name}</span> ({props.session.account.role}){' '}
            <button type="button" data-action="sign-out" onClick={props.signOut}>
              Sign out
            </button>
          </span>
        )}
        <span class={`live ${live ? 'up' : 'down'}`} title={live ? 'live updates on' : 'live updates off: reconnecting'} data-live={live ? 'up' : 'down'}>
          {live ? 'live' : 'offline'}
        </span>
      </header>
      <main>
        {route.view === 'overview' && <Overview />}
        {route.view === 'devices' && <DeviceTable query={route.query} />}
        {route.view === 'device' && <DevicePage id={route.id} />}
        {route.view === 'rollouts' && <RolloutsPage />}
        {route.view === 'validators' && <ValidatorsPage />}
        {route.view === 'accounts' &&
          (admin ? (
            <AccountsPage me={props.session.account?.name} />
          ) : (
            <p class="quiet">Accounts are for admins{props.session.auth ? '' : ', and none exists yet: make the first with cairn fleet account add NAME --role admin'}.</p>
          ))}
      </main>
    </>
  )
}

function SignIn(props: { done: (s: api.Session) => void }) {
  const [name, setName] = useState('')
  const [password, setPassword] = useState('')
  const [error, setError] = useState<string>()
  const [busy, setBusy] = useState(false)
  const submit = (e: Event) => {
    e.preventDefault()
    setBusy(true)
    setError(undefined)
    api.signIn(name, password).then(props.done, (err: unknown) => {
      setError(err instanceof Error ? err.message : String(err))
      setBusy(false)
    })
  }
  return (
    <main class="sign-in">
      <h1>Cairn fleet</h1>
      <form onSubmit={submit}>
        <label>
          Name <input data-field="name" autocomplete="username" required value={name} onInput={e => setName((e.currentTarget as HTMLInputElement).value)} />
        </label>
        <label>
          Password <input data-field="password" type="password" autocomplete="current-password" required value={password} onInput={e => setPassword((e.currentTarget as HTMLInputElement).value)} />
        </label>
        <button type="submit" data-action="sign-in" disabled={busy}>
          Sign in
        </button>
      </form>
      <Problem error={error} />
    </main>
  )
}

/** Signs in first where accounts apply (docs/console.md, "Accounts"). */
function Root() {
  const [session, setSession] = useState<api.Session>()
  const [error, setError] = useState<string>()
  useEffect(() => {
    api.onSignedOut(() => {
      closeLive()
      setSession({ auth: true })
    })
    api.session().then(setSession, (err: unknown) => setError(err instanceof Error ? err.message : String(err)))
  }, [])
  const signOut = () => {
    closeLive()
    api.signOut().then(setSession, () => setSession({ auth: true }))
  }
  if (error) return <Problem error={error} />
  if (!session) return null
  if (session.auth && !session.account) return <SignIn done={setSession} />
  return <App session={session} signOut={signOut} />
}

render(<Root />, document.getElementById('app')!)
