import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';

/** How often the checkpointer copies the WAL into the database file (and syncs both). */
export const CHECKPOINT_INTERVAL_MS = 200;

/**
 * The store's own connection checkpoints only past this many WAL pages (SQLite's default is
 * 1,000). The checkpointer thread normally has copied them long before; this bounds the WAL if it
 * cannot keep up or is gone, and lets the WAL start over after a long burst of writes.
 */
export const BACKSTOP_CHECKPOINT_PAGES = 10_000;

/*
 * The thread's whole program. It runs plain CommonJS (an `eval` worker), so it needs no build step
 * and works the same from the TypeScript sources and from dist/. PASSIVE never waits for the
 * writer and never makes the writer wait; `synchronous = NORMAL` on this connection makes every
 * checkpoint sync the WAL before copying it and the database file after.
 */
const PROGRAM = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.driver);
const db = new Database(workerData.file, { fileMustExist: true });
db.pragma('synchronous = NORMAL');
const checkpoint = db.prepare('pragma wal_checkpoint(passive)');
let failing = false;
function run() {
  try {
    checkpoint.get();
    failing = false;
  } catch (error) {
    if (!failing) parentPort.postMessage({ error: String(error && error.message || error) });
    failing = true;
  }
}
const timer = setInterval(run, workerData.intervalMs);
parentPort.on('message', () => {
  clearInterval(timer);
  run();
  db.close();
  parentPort.close();
});
`;

export interface Checkpointer {
  /** Copies what is left, syncs, and ends the thread. */
  stop(): Promise<void>;
}

/**
 * Checkpoints a WAL-mode SQLite file from a thread of its own (decision 64). A checkpoint syncs
 * the WAL and the database file; done inside a commit, as SQLite does by default, the committing
 * caller's event loop waits for both syncs. Done here, commits only append to the WAL, and every
 * commit reaches the disk within about CHECKPOINT_INTERVAL_MS instead of whenever the WAL next
 * reaches 1,000 pages.
 */
export function startCheckpointer(file: string, onError: (message: string) => void): Checkpointer {
  const driver = createRequire(import.meta.url).resolve('better-sqlite3');
  const worker = new Worker(PROGRAM, { eval: true, workerData: { file, driver, intervalMs: CHECKPOINT_INTERVAL_MS } });
  worker.unref();
  worker.on('message', (m: { error: string }) => onError(`the WAL checkpoint failed: ${m.error}`));
  worker.on('error', (error) => onError(`the checkpoint thread stopped: ${error.message}`));
  const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
  return {
    async stop() {
      // Unreferenced, the thread would not keep the process alive until it has finished.
      worker.ref();
      worker.postMessage('stop');
      await exited;
    },
  };
}
