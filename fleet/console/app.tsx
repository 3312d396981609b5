// The fleet console: a single page on `cairn fleet serve` (docs/console.md). Three views,
// each a URL (#/, #/devices?…, #/devices/<id>), each reloading from the API when the
// live stream says something it shows changed. Every string a device sent (board, model,
// version, labels, event data, problems) is rendered as text by Preact, never as HTML.

import './style.css'
import { render } from 'preact'
import { useEffect, useState } from 'preact/hooks'
import * as api from './api.js'
import { Overview } from './overview.js'
import { DeviceTable } from './device-table.js'
import { DevicePage } from './device-page.js'
import { useLiveState } from './live.js'
import { parseRoute, type Route } from './route.js'

function useRoute(): Route {
  const [route, setRoute] = useState(() => parseRoute(location.hash))
  useEffect(() => {
    const on = () => setRoute(parseRoute(location.hash))
    window.addEventListener('hashchange', on)
    return () => window.removeEventListener('hashchange', on)
  }, [])
  return route
}

function App() {
  const route = useRoute()
  const live = useLiveState()
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
          <a href="#/devices" class={route.view !== 'overview' ? 'on' : ''}>
            Devices
          </a>
        </nav>
        <span class={`live ${live ? 'up' : 'down'}`} title={live ? 'live updates on' : 'live updates off: reconnecting'} data-live={live ? 'up' : 'down'}>
          {live ? 'live' : 'offline'}
        </span>
      </header>
      <main>
        {route.view === 'overview' && <Overview />}
        {route.view === 'devices' && <DeviceTable query={route.query} />}
        {route.view === 'device' && <DevicePage id={route.id} />}
      </main>
    </>
  )
}

render(<App />, document.getElementById('app')!)
