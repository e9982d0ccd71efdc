/**
 * Real file servers on loopback for the chart uploads: an SFTP server (ssh2's `Server`, files kept
 * in memory, public-key authentication only, its own generated host key) and an FTP/FTPS server
 * (ftp-srv on a temp directory, explicit TLS with a certificate generated here). Both can be
 * stopped and started again on the same port, and can cut an upload off part-way.
 */
import { timingSafeEqual } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import type { Server as NetServer, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { Writable } from 'node:stream';
import ftpsrv from 'ftp-srv';
import { generate } from 'selfsigned';
import ssh2 from 'ssh2';
import { sshFingerprint } from '../../src/integrations/charts/sftp.js';
import { freePort } from './net.js';

const { Server, utils } = ssh2;
const { OPEN_MODE, STATUS_CODE } = ssh2.utils.sftp;

export interface KeyPair {
  private: string;
  public: string;
  fingerprint: string;
}

/**
 * An ed25519 SSH key pair (OpenSSH text) and its SHA-256 fingerprint. ssh2 1.17's key generator
 * strips a public key's leading zero bytes, so about one key in 256 comes out malformed and its own
 * parser refuses it (mscdex/ssh2 issue 1513): such a pair is drawn again.
 */
export function sshKeyPair(): KeyPair {
  for (let attempt = 1; ; attempt++) {
    const keys = utils.generateKeyPairSync('ed25519');
    const parsed = utils.parseKey(keys.public);
    const parsedPrivate = utils.parseKey(keys.private);
    if (!(parsed instanceof Error) && !(parsedPrivate instanceof Error)) {
      return { private: keys.private, public: keys.public, fingerprint: sshFingerprint(parsed.getPublicSSH()) };
    }
    if (attempt === 5) throw parsed instanceof Error ? parsed : parsedPrivate;
  }
}

// ------------------------------------------------------------------ SFTP

export interface SftpServer {
  port: number;
  hostKey: KeyPair;
  /** Absolute path → contents; what the server stored, partial files included. */
  files: Map<string, Buffer>;
  /** Drop the connection once an upload has written more than this many bytes (once). */
  faults: { dropAfterBytes?: number };
  /** Names of the files opened for writing, in order. */
  opened: string[];
  stop(): Promise<void>;
  start(): Promise<void>;
}

function matches(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

export async function startSftpServer(opts: { user: string; clientPublicKey: string }): Promise<SftpServer> {
  const hostKey = sshKeyPair();
  const allowed = utils.parseKey(opts.clientPublicKey);
  if (allowed instanceof Error) throw allowed;
  const files = new Map<string, Buffer>();
  const opened: string[] = [];
  const faults: SftpServer['faults'] = {};
  const port = await freePort();
  const sockets = new Set<Socket>();
  let server: NetServer | undefined;

  const abs = (p: string) => posix.resolve('/', p);
  const attrs = (size: number, dir = false) => {
    const now = Math.floor(Date.now() / 1000);
    return { mode: dir ? 0o040755 : 0o100644, uid: 0, gid: 0, size, atime: now, mtime: now };
  };

  const make = () =>
    new Server({ hostKeys: [hostKey.private] }, (client) => {
      client.on('error', () => undefined);
      client.on('authentication', (ctx) => {
        if (ctx.method !== 'publickey' || ctx.username !== opts.user) return ctx.reject(['publickey']);
        if (ctx.key.algo !== allowed.type || !matches(ctx.key.data, allowed.getPublicSSH())) return ctx.reject(['publickey']);
        if (ctx.signature && allowed.verify(ctx.blob!, ctx.signature, ctx.hashAlgo) !== true) return ctx.reject(['publickey']);
        ctx.accept();
      });
      client.on('ready', () => {
        client.on('session', (acceptSession) => {
          const session = acceptSession();
          session.on('sftp', (acceptSftp) => {
            const sftp = acceptSftp();
            const handles = new Map<number, { path: string; written: number }>();
            let next = 0;
            const handleOf = (buf: Buffer) => handles.get(buf.readUInt32BE(0));
            sftp.on('OPEN', (id, filename, flags) => {
              const path = abs(filename);
              if (flags & OPEN_MODE.WRITE) {
                if (flags & OPEN_MODE.TRUNC || !files.has(path)) files.set(path, Buffer.alloc(0));
                opened.push(path);
              } else if (!files.has(path)) {
                return sftp.status(id, STATUS_CODE.NO_SUCH_FILE);
              }
              const h = Buffer.alloc(4);
              h.writeUInt32BE(next);
              handles.set(next++, { path, written: 0 });
              sftp.handle(id, h);
            });
            sftp.on('WRITE', (id, handle, offset, data) => {
              const h = handleOf(handle);
              if (!h) return sftp.status(id, STATUS_CODE.FAILURE);
              const current = files.get(h.path) ?? Buffer.alloc(0);
              const size = Math.max(current.length, offset + data.length);
              const out = Buffer.alloc(size);
              current.copy(out);
              data.copy(out, offset);
              files.set(h.path, out);
              h.written += data.length;
              if (faults.dropAfterBytes !== undefined && h.written > faults.dropAfterBytes) {
                // Keep only what "arrived" before the line dropped, then drop it.
                files.set(h.path, out.subarray(0, faults.dropAfterBytes));
                delete faults.dropAfterBytes;
                client.end();
                return;
              }
              sftp.status(id, STATUS_CODE.OK);
            });
            sftp.on('READ', (id, handle, offset, length) => {
              const h = handleOf(handle);
              const data = h ? files.get(h.path) : undefined;
              if (!data || offset >= data.length) return sftp.status(id, STATUS_CODE.EOF);
              sftp.data(id, data.subarray(offset, offset + length));
            });
            sftp.on('CLOSE', (id, handle) => {
              handles.delete(handle.readUInt32BE(0));
              sftp.status(id, STATUS_CODE.OK);
            });
            sftp.on('FSTAT', (id, handle) => {
              const h = handleOf(handle);
              if (!h) return sftp.status(id, STATUS_CODE.FAILURE);
              sftp.attrs(id, attrs(files.get(h.path)?.length ?? 0));
            });
            const stat = (id: number, path: string) => {
              const p = abs(path);
              if (p === '/') return sftp.attrs(id, attrs(0, true));
              const data = files.get(p);
              if (!data) return sftp.status(id, STATUS_CODE.NO_SUCH_FILE);
              sftp.attrs(id, attrs(data.length));
            };
            sftp.on('STAT', stat);
            sftp.on('LSTAT', stat);
            sftp.on('REALPATH', (id, path) => sftp.name(id, [{ filename: abs(path), longname: abs(path), attrs: attrs(0, true) }]));
            sftp.on('REMOVE', (id, path) => sftp.status(id, files.delete(abs(path)) ? STATUS_CODE.OK : STATUS_CODE.NO_SUCH_FILE));
            sftp.on('RENAME', (id, from, to) => {
              const data = files.get(abs(from));
              // As OpenSSH does for protocol version 3: no rename onto an existing file.
              if (!data || files.has(abs(to))) return sftp.status(id, STATUS_CODE.FAILURE);
              files.delete(abs(from));
              files.set(abs(to), data);
              sftp.status(id, STATUS_CODE.OK);
            });
          });
        });
      });
    });

  const start = () =>
    new Promise<void>((resolve, reject) => {
      const s = make();
      s.on('connection', () => undefined);
      // ssh2's Server wraps a net.Server; track raw sockets so stop() can cut live connections.
      const net = (s as unknown as { _srv: NetServer })._srv;
      net.on('connection', (socket: Socket) => {
        sockets.add(socket);
        socket.on('close', () => sockets.delete(socket));
      });
      s.once('error', reject);
      s.listen(port, '127.0.0.1', () => {
        server = net;
        resolve();
      });
    });
  const stop = () =>
    new Promise<void>((resolve) => {
      for (const socket of sockets) socket.destroy();
      if (!server) return resolve();
      server.close(() => resolve());
      server = undefined;
    });

  await start();
  return { port, hostKey, files, faults, opened, stop, start };
}

// ------------------------------------------------------------------ FTP / FTPS

export interface FtpServer {
  port: number;
  /** The directory the user's uploads land in. */
  root: string;
  /** PEM of the server's self-signed certificate (when TLS is on): what the client must trust. */
  cert?: string;
  /** Fail the next upload after storing this many bytes of it. */
  faults: { cutAfterBytes?: number };
  stop(): Promise<void>;
  start(): Promise<void>;
  cleanup(): Promise<void>;
}

/** ftp-srv logs through bunyan to stdout by default; the tests want silence. */
const quiet = {
  child: () => quiet,
  trace: () => undefined,
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
  fatal: () => undefined,
};

export async function startFtpServer(opts: { user: string; password: string; tls: boolean }): Promise<FtpServer> {
  const root = mkdtempSync(join(tmpdir(), 'kessai-ftp-'));
  const port = await freePort();
  const faults: FtpServer['faults'] = {};
  let cert: string | undefined;
  let key: string | undefined;
  if (opts.tls) {
    const pems = await generate([{ name: 'commonName', value: 'localhost' }], {
      keySize: 2048,
      algorithm: 'sha256',
      extensions: [
        { name: 'basicConstraints', cA: true },
        { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, keyCertSign: true },
        { name: 'extKeyUsage', serverAuth: true },
        { name: 'subjectAltName', altNames: [{ type: 2, value: 'localhost' }, { type: 7, ip: '127.0.0.1' }] },
      ],
    });
    cert = pems.cert;
    key = pems.private;
  }

  /** Stores only the first bytes of an upload, then fails it, as a connection lost mid-transfer would. */
  class FaultyFileSystem extends ftpsrv.FileSystem {
    override write(fileName: string, options?: { append?: boolean; start?: unknown }) {
      const cut = faults.cutAfterBytes;
      const real = super.write(fileName, options) as { stream: Writable; clientPath: string };
      if (cut === undefined) return real;
      delete faults.cutAfterBytes;
      let stored = 0;
      const file = real.stream;
      const stream = new Writable({
        write(chunk: Buffer, _enc, done) {
          const take = chunk.subarray(0, Math.max(0, cut - stored));
          stored += take.length;
          file.write(take, () => {
            if (stored >= cut) file.end(() => done(new Error('connection lost (test fault)')));
            else done();
          });
        },
      });
      return { stream, clientPath: real.clientPath };
    }
  }

  let server: InstanceType<typeof ftpsrv.FtpSrv> | undefined;
  const start = async () => {
    const s = new ftpsrv.FtpSrv({
      url: `ftp://127.0.0.1:${port}`,
      pasv_url: '127.0.0.1',
      pasv_min: 40000,
      pasv_max: 60000,
      anonymous: false,
      greeting: 'kessai test FTP',
      tls: opts.tls ? { key: key!, cert: cert! } : false,
      log: quiet,
    });
    s.on('login', ({ connection, username, password }, resolve, reject) => {
      if (username === opts.user && password === opts.password) {
        resolve({ fs: new FaultyFileSystem(connection, { root, cwd: '/' }) });
      } else {
        reject(new Error('invalid user or password'));
      }
    });
    s.on('client-error', () => undefined);
    await s.listen();
    server = s;
  };
  const stop = async () => {
    const s = server;
    server = undefined;
    await s?.close();
  };
  await start();
  return {
    port,
    root,
    ...(cert ? { cert } : {}),
    faults,
    stop,
    start,
    async cleanup() {
      await stop();
      rmSync(root, { recursive: true, force: true });
    },
  };
}

