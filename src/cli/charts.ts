import { resolve } from 'node:path';
import { Option, type Command } from 'commander';
import { parseReportDate, reportingWindow } from '../commerce/chart-sales.js';
import { buildChart, CHART_TARGETS, chartFileSetup, listChartRuns, sendChart, TARGET_NAMES, type ChartTarget } from '../commerce/charts.js';
import { DEFAULT_SHOP_ID, getShopSettings } from '../commerce/shops.js';
import { KessaiError } from '../errors.js';
import type { Runtime } from '../runtime.js';

/*
 * `kessai charts build|send|runs`. Exit codes of `send`: 0 every target sent, 1 a target failed,
 * 3 a target was already sent for that date and --force was not given (nothing was uploaded).
 */

type WithRuntime = <T>(fn: (rt: Runtime) => Promise<T>) => Promise<T>;

const out = (line: string) => process.stdout.write(`${line}\n`);
const err = (line: string) => process.stderr.write(`${line}\n`);
const targetOption = () => new Option('--target <target>', 'oricon or billboard').choices([...CHART_TARGETS]);

export function addChartCommands(cli: Command, withRuntime: WithRuntime): void {
  const charts = cli.command('charts').description('daily chart reports to Oricon (SFTP) and Billboard Japan (FTPS)');

  charts
    .command('build')
    .description('write a reporting date\'s file locally, without sending it')
    .requiredOption('--date <date>', 'reporting date, YYYY-MM-DD (JST)')
    .addOption(targetOption().makeOptionMandatory())
    .option('--shop <shop>', 'shop id', DEFAULT_SHOP_ID)
    .option('--out <file>', 'where to write it (default: the file name the agency gets, in the current directory)')
    .action((opts: { date: string; target: ChartTarget; shop: string; out?: string }) =>
      withRuntime(async (rt) => {
        const date = parseReportDate(opts.date, '--date');
        if (new Date() < reportingWindow(date).end) err(`warning: the reporting window of ${date} is open until 22:00 JST; this file is not the final one`);
        const settings = await getShopSettings(rt.ctx, opts.shop);
        const path = resolve(opts.out ?? chartFileSetup(settings, opts.target, date).fileName);
        const file = await buildChart(rt.ctx, { shop: opts.shop, target: opts.target, date, out: path });
        out(`${file.path}: ${file.rows} record(s), ${file.bytes} bytes, sha256 ${file.checksum}`);
      }),
    );

  charts
    .command('send')
    .description('send a reporting date\'s file(s) now; a date already sent is refused unless --force')
    .requiredOption('--date <date>', 'reporting date, YYYY-MM-DD (JST)')
    .addOption(targetOption())
    .option('--shop <shop>', 'shop id', DEFAULT_SHOP_ID)
    .option('--force', 'send again although this date was already sent')
    .action((opts: { date: string; target?: ChartTarget; shop: string; force?: boolean }) =>
      withRuntime(async (rt) => {
        const date = parseReportDate(opts.date, '--date');
        const settings = await getShopSettings(rt.ctx, opts.shop);
        const targets = opts.target ? [opts.target] : CHART_TARGETS.filter((t) => settings[`${t}.enabled`] === true);
        if (targets.length === 0) {
          throw new KessaiError('chart_not_configured', `no chart target is enabled for shop "${opts.shop}" (oricon.enabled, billboard.enabled); name one with --target`);
        }
        let failed = false;
        let refused = false;
        for (const target of targets) {
          const name = TARGET_NAMES[target];
          try {
            const result = await sendChart(rt.ctx, { shop: opts.shop, target, date }, { force: opts.force === true });
            if (result.status === 'already_sent') {
              err(`${name} ${date}: refused, already sent at ${result.run.sent_at} (${result.run.file_name}, sha256 ${result.run.checksum}); add --force to send it again`);
              refused = true;
              continue;
            }
            for (const w of result.warnings) err(`warning: ${w}`);
            out(`${name} ${date}: sent ${result.file.fileName} to ${result.destination}: ${result.file.rows} record(s), ${result.file.bytes} bytes, sha256 ${result.file.checksum}`);
          } catch (error) {
            err(`${name} ${date}: not sent: ${error instanceof Error ? error.message : String(error)}`);
            failed = true;
          }
        }
        process.exitCode = failed ? 1 : refused ? 3 : 0;
      }),
    );

  charts
    .command('runs')
    .description('chart report runs, newest date first')
    .option('--shop <shop>', 'only this shop')
    .option('--date <date>', 'only this reporting date')
    .action((opts: { shop?: string; date?: string }) =>
      withRuntime(async (rt) => {
        const runs = await listChartRuns(rt.ctx, opts);
        if (runs.length === 0) {
          out('no chart runs');
          return;
        }
        for (const r of runs) {
          out(
            [r.report_date, r.shop_id, r.target, r.outcome, `attempts=${r.attempts}`, `sends=${r.sends}`, `rows=${r.row_count ?? '-'}`, `sha256=${r.checksum?.slice(0, 16) ?? '-'}`, r.sent_at ?? '-', r.error ?? '']
              .join('\t')
              .trimEnd(),
          );
        }
      }),
    );
}
