/**
 * `npm run bench`: every benchmark, one after another, each in its own process (a fresh heap and a
 * fresh database each). Figures and how to read them: docs/benchmarks.md.
 *
 *   KESSAI_BENCH_ENGINES=sqlite npm run bench     skip the PostgreSQL flash sale
 */
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const engines = (process.env.KESSAI_BENCH_ENGINES ?? 'sqlite,postgres').split(',').map((e) => e.trim()).filter(Boolean);

const runs: [string, string[]][] = [['checkout-throughput.ts', []]];
for (const engine of engines) runs.push(['flash-sale.ts', ['--engine', engine]]);
for (const engine of engines) runs.push(['sbps-notifications.ts', ['--engine', engine]]);
for (const engine of engines) runs.push(['komoju-webhooks.ts', ['--engine', engine]]);
for (const engine of engines) runs.push(['serial-import.ts', ['--engine', engine]]);
for (const engine of engines) runs.push(['chart-files.ts', ['--engine', engine]]);

let failed = 0;
for (const [file, args] of runs) {
  process.stderr.write(`\n[bench] ${file} ${args.join(' ')}\n`);
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(here, file), ...args], { stdio: 'inherit' });
  if (r.status !== 0) {
    failed += 1;
    process.stderr.write(`[bench] ${file} ${args.join(' ')} failed (exit ${r.status ?? r.signal})\n`);
  }
}
process.exitCode = failed > 0 ? 1 : 0;
