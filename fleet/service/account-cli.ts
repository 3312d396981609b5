// `cairn fleet account add|passwd|role|remove|list`: the fleet service's accounts, kept in
// its store (the state dir's fleet.db), so they work while the service runs. A password
// is asked for twice without echo on a terminal, or read from the first line of stdin
// (scripts: `printf '%s\n' "$PW" | cairn fleet account add ...`); never from a flag,
// where it would sit in the shell history and the process list.

import { Command, Option } from 'commander'
import { createInterface } from 'node:readline'
import { CairnError } from '../../protocol/errors.js'
import { ensureStateDir } from '../../protocol/identity.js'
import { ACCOUNT_NAME, ROLES, type Role } from './fleet-store.js'
import { checkPassword, hashPassword } from './passwords.js'
import { SqliteFleetStore } from './sqlite-store.js'

type Out = { write(s: string): unknown }
type Io = { out: Out; err: Out; setExitCode(code: number): void }

const roleOption = () => new Option('--role <role>', 'viewer (looks), operator (also commands and labels), admin (also accounts)').choices(ROLES)

function checkName(name: string): void {
  if (!new RegExp(ACCOUNT_NAME).test(name)) throw new CairnError('BAD_REQUEST', `account name ${JSON.stringify(name.slice(0, 40))}: 1-32 of a-z 0-9 _ . -, starting with a letter or digit`)
}

async function withStore<T>(stateDir: string, run: (s: SqliteFleetStore) => Promise<T>): Promise<T> {
  ensureStateDir(stateDir)
  const store = new SqliteFleetStore(stateDir)
  try {
    return await run(store)
  } finally {
    await store.close()
  }
}

function readHidden(prompt: string, err: Out): Promise<string> {
  const stdin = process.stdin
  return new Promise((resolve, reject) => {
    err.write(prompt)
    let text = ''
    const done = () => {
      stdin.setRawMode(false)
      stdin.pause()
      stdin.off('data', onData)
      err.write('\n')
    }
    const onData = (chunk: string) => {
      for (const c of chunk) {
        if (c === '\r' || c === '\n') return (done(), resolve(text))
        if (c === '\u0003' || c === '\u0004') return (done(), reject(new CairnError('BAD_REQUEST', 'cancelled')))
        text = c === '\u007f' || c === '\b' ? text.slice(0, -1) : text + c
      }
    }
    stdin.setEncoding('utf8')
    stdin.setRawMode(true)
    stdin.resume()
    stdin.on('data', onData)
  })
}

async function readFirstLine(): Promise<string> {
  const rl = createInterface({ input: process.stdin, terminal: false })
  try {
    for await (const line of rl) return line
    return ''
  } finally {
    rl.close()
  }
}

/** A new password: twice, hidden, on a terminal; else stdin's first line. */
async function newPassword(io: Io): Promise<string> {
  if (!process.stdin.isTTY) {
    const pw = await readFirstLine()
    checkPassword(pw)
    return pw
  }
  const pw = await readHidden('password: ', io.err)
  checkPassword(pw)
  if ((await readHidden('again: ', io.err)) !== pw) throw new CairnError('BAD_REQUEST', 'the two passwords differ')
  return pw
}

export function accountCommand(io: Io): Command {
  const stateDir = () => new Option('--state-dir <dir>', "the fleet service's state dir (its fleet.db)").makeOptionMandatory()
  return new Command('account')
    .description("the fleet service's accounts (needed to listen beyond loopback; once one exists, every API call signs in)")
    .addCommand(
      new Command('add')
        .addHelpText(
          'after',
          `\nExamples:\n  cairn fleet account add alice --role admin --state-dir /var/lib/cairn-fleet
  printf '%s\\n' "$PASSWORD" | cairn fleet account add ci --role viewer --state-dir /var/lib/cairn-fleet`,
        )
        .description('add an account; the password is asked for (or read from stdin)')
        .argument('<name>')
        .addOption(roleOption().default('operator'))
        .addOption(stateDir())
        .action(async (name: string, o: { role: Role; stateDir: string }) => {
          checkName(name)
          await withStore(o.stateDir, async store => {
            if (await store.getAccount(name)) throw new CairnError('BAD_REQUEST', `account ${name} exists (passwd or role change it)`)
            const passwordHash = await hashPassword(await newPassword(io))
            if (!(await store.addAccount({ name, role: o.role, passwordHash, created: Date.now() }))) throw new CairnError('BAD_REQUEST', `account ${name} exists (made meanwhile)`)
          })
          io.out.write(`added ${name} (${o.role})\n`)
        }),
    )
    .addCommand(
      new Command('passwd')
        .addHelpText('after', `\nExamples:\n  cairn fleet account passwd alice --state-dir /var/lib/cairn-fleet`)
        .description("set an account's password (its sessions end)")
        .argument('<name>')
        .addOption(stateDir())
        .action(async (name: string, o: { stateDir: string }) => {
          checkName(name)
          await withStore(o.stateDir, async store => {
            if (!(await store.getAccount(name))) throw new CairnError('BAD_REQUEST', `no account ${name}`)
            const passwordHash = await hashPassword(await newPassword(io))
            // the password alone: a role set meanwhile stays
            if (!(await store.updateAccount(name, { passwordHash }))) throw new CairnError('BAD_REQUEST', `no account ${name} (removed meanwhile)`)
          })
          io.out.write(`new password for ${name}; its sessions ended\n`)
        }),
    )
    .addCommand(
      new Command('role')
        .addHelpText('after', `\nExamples:\n  cairn fleet account role bob --role operator --state-dir /var/lib/cairn-fleet`)
        .description("set an account's role (at once, in its open sessions too)")
        .argument('<name>')
        .addOption(roleOption().makeOptionMandatory())
        .addOption(stateDir())
        .action(async (name: string, o: { role: Role; stateDir: string }) => {
          checkName(name)
          await withStore(o.stateDir, async store => {
            // the role alone: a password set meanwhile stays
            if (!(await store.updateAccount(name, { role: o.role }))) throw new CairnError('BAD_REQUEST', `no account ${name}`)
          })
          io.out.write(`${name} is now ${o.role}\n`)
        }),
    )
    .addCommand(
      new Command('remove')
        .addHelpText('after', `\nExamples:\n  cairn fleet account remove bob --state-dir /var/lib/cairn-fleet`)
        .description('remove an account and end its sessions')
        .argument('<name>')
        .addOption(stateDir())
        .action(async (name: string, o: { stateDir: string }) => {
          checkName(name)
          const removed = await withStore(o.stateDir, store => store.removeAccount(name))
          if (!removed) throw new CairnError('BAD_REQUEST', `no account ${name}`)
          io.out.write(`removed ${name}\n`)
        }),
    )
    .addCommand(
      new Command('list')
        .addHelpText('after', `\nExamples:\n  cairn fleet account list --state-dir /var/lib/cairn-fleet`)
        .description('the accounts and their roles')
        .addOption(stateDir())
        .action(async (o: { stateDir: string }) => {
          const accounts = await withStore(o.stateDir, store => store.listAccounts())
          if (accounts.length === 0) io.out.write('no accounts: on loopback the API is open to this machine\n')
          for (const a of accounts) io.out.write(`${a.name}\t${a.role}\tsince ${new Date(a.created).toISOString()}\n`)
        }),
    )
    .addHelpText(
      'after',
      `
Examples:
  cairn fleet account add alice --role admin --state-dir /var/lib/cairn-fleet
  printf '%s\\n' "$PASSWORD" | cairn fleet account add ci --role viewer --state-dir /var/lib/cairn-fleet
  cairn fleet account list --state-dir /var/lib/cairn-fleet`,
    )
}
