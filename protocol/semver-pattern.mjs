// Strict Semantic Versioning 2.0.0 as one regular expression source (capture groups:
// major, minor, patch, pre-release, build). Plain JavaScript so that cli/bundle.mjs, which
// node runs without a TypeScript loader, checks a version with the very pattern
// protocol/semver.ts parses with; it also serves as a JSON Schema `pattern`.
// (ota/launcher.mjs keeps its own copy: it is copied beside the bundle alone.)

const NUM = '0|[1-9]\\d*'
const PRE_ID = `(?:${NUM}|\\d*[a-zA-Z-][0-9a-zA-Z-]*)`

export const SEMVER_PATTERN = `^(${NUM})\\.(${NUM})\\.(${NUM})(?:-(${PRE_ID}(?:\\.${PRE_ID})*))?(?:\\+([0-9a-zA-Z-]+(?:\\.[0-9a-zA-Z-]+)*))?$`
