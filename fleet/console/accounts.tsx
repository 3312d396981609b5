// The accounts page (admins): who may use the console and with which role; add an
// account, change a role (at once, in its open sessions too), set a new password (its
// sessions end), remove one. The service checks everything again (auth.ts); this page
// only asks. An admin's own account is changed with the CLI, so nobody locks
// themself out here.

import { useState } from 'preact/hooks'
import * as api from './api.js'
import { ago, time } from './format.js'
import { Problem, useLoad } from './ui.js'

const ROLES: api.Role[] = ['viewer', 'operator', 'admin']
const ROLE_TEXT: Record<api.Role, string> = { viewer: 'looks', operator: 'also sends commands and sets labels', admin: 'also manages accounts' }

export function AccountsPage(props: { me: string | undefined }) {
  const [tick, setTick] = useState(0)
  const reload = () => setTick(t => t + 1)
  const list = useLoad(() => api.accounts(), [tick])
  const [error, setError] = useState<string>()
  const [done, setDone] = useState<string>()
  const act = (what: Promise<unknown>, said: string) => {
    setError(undefined)
    setDone(undefined)
    what.then(
      () => {
        setDone(said)
        reload()
      },
      (err: unknown) => {
        setError(err instanceof Error ? err.message : String(err))
        reload() // a select shows what the service holds, not the refused choice
      },
    )
  }
  return (
    <section class="accounts">
      <h1>Accounts</h1>
      <Problem error={list.error ?? error} />
      {done && (
        <p class="done" data-done>
          {done}
        </p>
      )}
      {list.value && (
        <table class="grid account-list">
          <thead>
            <tr>
              <th>Name</th>
              <th>Role</th>
              <th>Since</th>
              <th>New password</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {list.value.items.map(a => (
              <AccountRow key={a.name} account={a} me={a.name === props.me} act={act} />
            ))}
          </tbody>
        </table>
      )}
      <AddAccount act={act} />
      <p class="quiet">
        Roles: {ROLES.map(r => `${r} (${ROLE_TEXT[r]})`).join(', ')}. A role change applies at once, in open sessions too; a new password ends the account's sessions. Your own account is changed with{' '}
        <span class="mono">cairn fleet account</span> on the service's machine.
      </p>
    </section>
  )
}

type Act = (what: Promise<unknown>, said: string) => void

function AccountRow(props: { account: api.Account; me: boolean; act: Act }) {
  const a = props.account
  const [password, setPassword] = useState('')
  return (
    <tr data-account-row={a.name}>
      <td>
        {a.name}
        {props.me && <span class="quiet"> (you)</span>}
      </td>
      <td>
        {props.me ? (
          a.role
        ) : (
          <select
            data-field="role"
            value={a.role}
            onChange={e => {
              const role = (e.currentTarget as HTMLSelectElement).value as api.Role
              props.act(api.changeAccount(a.name, { role }), `${a.name} is now ${role}`)
            }}
          >
            {ROLES.map(r => (
              <option value={r} key={r}>
                {r}
              </option>
            ))}
          </select>
        )}
      </td>
      <td title={time(a.created)}>{ago(a.created)}</td>
      <td>
        {!props.me && (
          <form
            class="inline"
            onSubmit={e => {
              e.preventDefault()
              props.act(
                api.changeAccount(a.name, { password }).then(() => setPassword('')),
                `new password for ${a.name}; its sessions ended`,
              )
            }}
          >
            <input
              type="password"
              data-field="new-password"
              autocomplete="new-password"
              minLength={10}
              maxLength={1024}
              value={password}
              onInput={e => setPassword((e.currentTarget as HTMLInputElement).value)}
            />
            <button type="submit" data-action="set-password" disabled={password.length < 10}>
              Set
            </button>
          </form>
        )}
      </td>
      <td>
        {!props.me && (
          <button
            type="button"
            data-action="remove-account"
            onClick={() => {
              if (confirm(`Remove ${a.name}? Their sessions end at once.`)) props.act(api.removeAccount(a.name), `${a.name} removed`)
            }}
          >
            Remove
          </button>
        )}
      </td>
    </tr>
  )
}

function AddAccount(props: { act: Act }) {
  const [name, setName] = useState('')
  const [role, setRole] = useState<api.Role>('viewer')
  const [password, setPassword] = useState('')
  return (
    <form
      class="add-account"
      onSubmit={e => {
        e.preventDefault()
        props.act(
          api.addAccount(name, role, password).then(() => {
            setName('')
            setPassword('')
          }),
          `${name} added (${role})`,
        )
      }}
    >
      <h2>Add an account</h2>
      <label>
        Name <input data-field="new-name" pattern="[a-z0-9][a-z0-9_.\-]{0,31}" required value={name} onInput={e => setName((e.currentTarget as HTMLInputElement).value)} />
      </label>{' '}
      <label>
        Role{' '}
        <select data-field="new-role" value={role} onChange={e => setRole((e.currentTarget as HTMLSelectElement).value as api.Role)}>
          {ROLES.map(r => (
            <option value={r} key={r}>
              {r}
            </option>
          ))}
        </select>
      </label>{' '}
      <label>
        Password (at least 10 characters){' '}
        <input
          type="password"
          data-field="new-account-password"
          autocomplete="new-password"
          minLength={10}
          maxLength={1024}
          required
          value={password}
          onInput={e => setPassword((e.currentTarget as HTMLInputElement).value)}
        />
      </label>{' '}
      <button type="submit" data-action="add-account">
        Add
      </button>
    </form>
  )
}
