// esbuild bundles the CSS a module imports into app.css; to TypeScript it is nothing.
declare module '*.css'
