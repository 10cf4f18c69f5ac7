// import() from this package's CommonJS output: tsc turns an import() into
// require() there, which cannot load an ES module (or would load a second
// copy of one already loading as the program's entry).

/** The module namespace at `url` (a file: URL), through Node's ES module loader. */
export const importEsm = new Function('url', 'return import(url)') as (url: string) => Promise<Record<string, unknown>>;
