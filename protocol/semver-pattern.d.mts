/** Strict SemVer 2.0.0 as a regular expression source; groups: major, minor, patch, pre-release, build. */
export declare const SEMVER_PATTERN: string
