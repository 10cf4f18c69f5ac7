// The program's own prom-client metrics, for the master's /metrics. Only a
// prom-client the program has loaded itself is read (found in require.cache),
// so a program without it pays nothing and handover never loads it:
// prom-client stays an optional peer. Each copy loaded (the program's, a
// dependency's own) has its own default registry; all of them are read.

interface Registry {
  getMetricsAsJSON(): Promise<unknown[]>;
}

const PROM_CLIENT = /[\\/]node_modules[\\/]prom-client[\\/]index\.js$/;

/** The default registries of every prom-client loaded in this process. */
function loadedRegistries(): Registry[] {
  return Object.entries(require.cache).flatMap(([file, module]) => {
    if (!PROM_CLIENT.test(file)) return [];
    const register = (module?.exports as { register?: Registry } | undefined)?.register;
    return typeof register?.getMetricsAsJSON === 'function' ? [register] : [];
  });
}

/** The program's metrics as prom-client's JSON ([] without prom-client). */
export async function appMetricsSnapshot(): Promise<unknown[]> {
  const all = await Promise.all(loadedRegistries().map((r) => r.getMetricsAsJSON()));
  return all.flat();
}
