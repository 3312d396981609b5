// Types of build-client.mjs (plain JS, so cli/bundle.mjs can import it without tsx).
export declare const clientSource: string
export declare const clientBundle: string
export declare function buildNodeRedClient(outfile?: string): Promise<string>
export declare function ensureNodeRedClient(): Promise<string>
