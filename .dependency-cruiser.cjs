// The walls between Cairn's rooms, checked by `npm run walls` (part of `npm test`).
// docs/architecture.md says why each wall stands and what each room is for.
/** @type {import('dependency-cruiser').IConfiguration} */
const PROGRAMS = '(agent|validator|fleet|ota|cli|image-build|flows)'
const AGENT_FEATURES = '^agent/(proof|task|cache|infer|local-api|device-ui)/'

module.exports = {
  forbidden: [
    {
      name: 'no-cycles',
      comment: 'No module imports itself through others: a cycle has no bottom to start reading or testing from.',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
    {
      name: 'protocol-imports-no-program',
      comment: 'protocol/ is what every program shares (wire formats, signing, ids, topics, errors, storage helpers): it imports no program, and of hw/ only the telemetry sample schema it carries.',
      severity: 'error',
      from: { path: '^protocol/' },
      to: { path: [`^${PROGRAMS}/`, '^hw/(?!schema\\.ts$)', '^(bench|test)/'] },
    },
    {
      name: 'hw-imports-no-cairn',
      comment: 'hw/ is the hardware layer: drivers and parsers that know no program of Cairn.',
      severity: 'error',
      from: { path: '^hw/' },
      to: { path: [`^${PROGRAMS}/`, '^protocol/', '^(bench|test)/'] },
    },
    {
      name: 'agent-imports-no-other-program',
      comment: 'agent/ is the device agent; OTA and other rooms plug into it through agent/core/extension.ts, handed in by cli/.',
      severity: 'error',
      from: { path: '^agent/' },
      to: { path: ['^(validator|fleet|ota|cli|image-build|flows)/', '^(bench|test)/'] },
    },
    {
      name: 'agent-core-imports-no-feature',
      comment: 'The agent core (core/, config/) knows its features only through the extension port; agent/agent.ts composes them.',
      severity: 'error',
      from: { path: '^agent/(core|config)/' },
      to: { path: [AGENT_FEATURES, '^agent/agent\\.ts$'] },
    },
    {
      name: 'validator-imports-only-protocol',
      comment: 'The validator shares the protocol with devices, nothing of their code.',
      severity: 'error',
      from: { path: '^validator/' },
      to: { path: ['^(agent|fleet|ota|cli|image-build|flows)/', '^(bench|test)/'] },
    },
    {
      name: 'fleet-tools-import-only-protocol',
      comment:
        "The operator's tools speak the protocol; only the simulator (fleet/sim/) runs device code. The one exception is OTA's release list (ota/release-list.ts and its types): the fleet service reads the release repository with the device's own TUF verifier, so the console shows what a device would accept.",
      severity: 'error',
      from: { path: '^fleet/', pathNot: '^fleet/sim/' },
      to: { path: ['^(agent|validator|ota|cli|image-build|flows)/', '^(bench|test)/'], pathNot: '^ota/(release-list|release-types)\\.ts$' },
    },
    {
      name: 'simulator-runs-only-the-device-side',
      comment: "Simulated devices run the agent's own proof code and its core, nothing else of it, and no other program.",
      severity: 'error',
      from: { path: '^fleet/sim/' },
      to: { path: ['^(validator|ota|cli|image-build|flows)/', '^agent/(task|cache|infer|local-api|device-ui)/', '^agent/agent\\.ts$', '^(bench|test)/'] },
    },
    {
      name: 'ota-plugs-into-the-agent-core-only',
      comment: "OTA is an agent extension: of the agent it uses the core's port and config, nothing of its features; no other program.",
      severity: 'error',
      from: { path: '^ota/' },
      to: { path: ['^(validator|fleet|cli|image-build|flows)/', AGENT_FEATURES, '^agent/agent\\.ts$', '^(bench|test)/'] },
    },
    {
      name: 'image-build-not-agent-internals',
      comment:
        "The image's programs (provisioning, the OS-update helper) use the protocol, hw/, OTA's verifier and slot port, and the agent's configuration schema (the file format cairn.yaml carries); the agent itself reaches the image as the bundle.",
      severity: 'error',
      from: { path: '^image-build/' },
      to: { path: ['^(validator|fleet|cli|flows)/', '^agent/(?!config/)', '^(bench|test)/'] },
    },
    {
      name: 'flows-through-the-local-api-client',
      comment: 'The Node-RED package talks to the agent only through the local API client.',
      severity: 'error',
      from: { path: '^flows/' },
      to: { path: ['^(protocol|validator|fleet|ota|cli|image-build|hw)/', '^agent/(?!local-api/api-client\\.ts$)', '^(bench|test)/'] },
    },
    {
      name: 'nothing-imports-the-composition-room',
      comment: 'cli/ wires the programs together; nothing may depend on it.',
      severity: 'error',
      from: { path: '^(protocol|agent|validator|fleet|ota|hw|flows|image-build)/' },
      to: { path: '^cli/' },
    },
    {
      name: 'no-unresolvable-imports',
      comment: 'An import that resolves to nothing is a broken build waiting for the bundler.',
      severity: 'error',
      from: {},
      // the Node-RED package's copy of the local-API client is built (flows/build-client.mjs)
      to: { couldNotResolve: true, pathNot: '^\\.\\./lib/client\\.cjs$' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: ['^node_modules', '^dist/', '^flows/node-red-contrib-cairn/lib/client\\.cjs$'] },
    tsConfig: { fileName: 'tsconfig.json' },
    tsPreCompilationDeps: true,
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      conditionNames: ['import', 'require', 'node', 'default', 'types'],
      extensions: ['.ts', '.tsx', '.mts', '.js', '.mjs', '.cjs', '.d.ts', '.json'],
    },
  },
}
