/**
 * Reads HDF5 weight files with h5wasm, straight from disk (h5wasm's Node build reads through the
 * real file system, so a file is never loaded whole). Raw dataset bytes are copied out in row
 * blocks so the wasm heap stays small whatever the tensor size.
 *
 * h5wasm runs in a worker thread (hdf5-worker.ts) behind a watchdog: a corrupt file can make HDF5
 * loop forever or abort the WebAssembly module. A request that does not answer in time ends the
 * worker and fails as a FalconPresetError; a worker that saw any error is never reused, so one
 * corrupt file cannot break the next load.
 */
import { closeSync } from "node:fs";
import { Worker } from "node:worker_threads";

import { FalconPresetError } from "../errors.js";
import type { NativeSourceDType } from "../native.js";
import { openRegularFile, readExactly } from "./json.js";

export const HDF5_ELEMENT_BYTES: Readonly<Record<NativeSourceDType, number>> = { float16: 2, bfloat16: 2, float32: 4, float64: 8 };

export interface Hdf5DatasetInfo {
  dtype: NativeSourceDType;
  shape: number[];
}

export type Hdf5Operation =
  | { op: "open"; path: string }
  | { op: "list"; fileId: number }
  | { op: "info"; fileId: number; path: string; opaqueClass: number }
  | { op: "read"; fileId: number; path: string; shape: number[]; firstRow: number; rows: number; rowBytes: number }
  | { op: "close"; fileId: number };

/** One request to the worker; `id` pairs it with its response. */
export type Hdf5Request = Hdf5Operation & { id: number };

export type Hdf5Response = { id: number; value: unknown; error?: undefined } | { id: number; error: string };

/** What the worker reports about a dataset's element type and shape. */
interface RawDatasetInfo {
  type: number;
  size: number;
  littleEndian: boolean;
  shape: number[];
  tag: string | null;
}

export interface Hdf5Options {
  /** How long one request (open, list, one block read) may take before the file is declared corrupt. */
  timeoutMs?: number;
}

const HDF5_SIGNATURE = Buffer.from([0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a]);
const READ_BLOCK_BYTES = 16 * 1024 * 1024;
const H5T_FLOAT = 1;
const H5T_OPAQUE = 5;
/** A healthy request reads at most one block; ten seconds is far beyond that even from a slow disk. */
export const HDF5_REQUEST_TIMEOUT_MS = 10_000;
/** Starting a worker compiles h5wasm; a loaded machine may take a few seconds. */
const STARTUP_TIMEOUT_MS = 30_000;
/** Healthy idle workers kept for the next load, so loading presets repeatedly does not recompile h5wasm. */
const MAX_IDLE_WORKERS = 1;
const WORKER_URL = new URL("./hdf5-worker.js", import.meta.url);

/**
 * Checks the superblock's end-of-file address against the real size, so a truncated download is
 * reported as such instead of as an obscure HDF5 read failure deep inside a dataset.
 */
function checkSuperblock(file: string): number {
  const { fd, size } = openRegularFile(file);
  const header = Buffer.alloc(Math.min(64, size));
  try {
    readExactly(fd, file, header, 0);
  } finally {
    closeSync(fd);
  }
  if (header.length < 16 || !header.subarray(0, 8).equals(HDF5_SIGNATURE)) {
    throw new FalconPresetError(`${file}: not an HDF5 file (bad signature)`);
  }
  const version = header[8];
  let offsetSize: number;
  let eofAt: number;
  if (version === 0 || version === 1) {
    offsetSize = header[13];
    eofAt = 24 + (version === 1 ? 4 : 0) + 2 * offsetSize;
  } else if (version === 2 || version === 3) {
    offsetSize = header[9];
    eofAt = 12 + 2 * offsetSize;
  } else {
    throw new FalconPresetError(`${file}: unsupported HDF5 superblock version ${version}`);
  }
  if (offsetSize !== 8 || header.length < eofAt + 8) throw new FalconPresetError(`${file}: malformed HDF5 superblock`);
  const expected = header.readBigUInt64LE(eofAt);
  if (expected > BigInt(size)) {
    throw new FalconPresetError(`${file}: truncated: the HDF5 superblock says ${expected} bytes but the file has ${size}`);
  }
  return size;
}

interface Pending {
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout;
}

/** One h5wasm worker and its requests, each under a watchdog. */
class Hdf5Worker {
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  /** Set once the worker has failed, timed out or seen an HDF5 error: it is then never reused. */
  private failure: string | undefined;

  private constructor(private readonly worker: Worker) {
    worker.on("message", (response: Hdf5Response) => this.settle(response));
    worker.on("error", (error) => this.fail(`the HDF5 worker failed (${error.message})`));
    worker.on("exit", (code) => this.fail(`the HDF5 worker exited (code ${code})`));
  }

  get healthy(): boolean {
    return this.failure === undefined;
  }

  static async start(): Promise<Hdf5Worker> {
    for (let idle = idleWorkers.pop(); idle !== undefined; idle = idleWorkers.pop()) {
      // A late answer to a pooled worker's last request may have reported an error.
      if (idle.healthy) {
        idle.worker.ref();
        return idle;
      }
    }
    // The host's node flags (--input-type, --eval…) are not the worker's to inherit.
    const worker = new Hdf5Worker(new Worker(WORKER_URL, { execArgv: [] }));
    // The worker announces itself with response 0 once h5wasm is compiled.
    await worker.response(0, STARTUP_TIMEOUT_MS);
    return worker;
  }

  /** Sends one request; the worker must answer within `timeoutMs` or it is ended. */
  request(message: Hdf5Operation, timeoutMs: number): Promise<unknown> {
    const id = this.nextId++;
    const answer = this.response(id, timeoutMs);
    if (this.failure === undefined) this.worker.postMessage({ ...message, id });
    return answer;
  }

  /** The answer to request `id`, under a watchdog that ends the worker after `timeoutMs`. */
  private response(id: number, timeoutMs: number): Promise<unknown> {
    if (this.failure !== undefined) return Promise.reject(new Error(this.failure));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.fail(`the HDF5 reader did not answer within ${timeoutMs / 1000} s, so it was stopped`);
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
    });
  }

  private settle(response: Hdf5Response): void {
    const pending = this.pending.get(response.id);
    if (pending === undefined) return;
    this.pending.delete(response.id);
    clearTimeout(pending.timer);
    if (response.error === undefined) {
      pending.resolve(response.value);
    } else {
      // HDF5's state after an error is not trusted (a second corrupt file can then abort the module).
      this.failure ??= `an earlier request failed (${response.error})`;
      pending.reject(new Error(response.error));
    }
  }

  /** Ends the worker and fails every request still waiting. */
  private fail(reason: string): void {
    this.failure ??= reason;
    for (const [id, pending] of this.pending) {
      clearTimeout(pending.timer);
      this.pending.delete(id);
      pending.reject(new Error(reason));
    }
    void this.worker.terminate();
  }

  /** Keeps a healthy worker for the next load, ends any other. */
  release(): void {
    if (this.failure === undefined && idleWorkers.length < MAX_IDLE_WORKERS) {
      // An idle worker must not keep the process alive.
      this.worker.unref();
      idleWorkers.push(this);
    } else {
      this.fail("the HDF5 reader was closed");
    }
  }
}

const idleWorkers: Hdf5Worker[] = [];

/** A set of HDF5 files read by one worker; closing it closes them all. */
export class Hdf5Files {
  private readonly readers = new Set<Hdf5Reader>();
  private closed = false;

  private constructor(
    private readonly worker: Hdf5Worker,
    readonly timeoutMs: number,
  ) {}

  static async start(options: Hdf5Options = {}): Promise<Hdf5Files> {
    let worker: Hdf5Worker;
    try {
      worker = await Hdf5Worker.start();
    } catch (cause) {
      throw new FalconPresetError(`cannot start the HDF5 reader (${(cause as Error).message})`, { cause });
    }
    return new Hdf5Files(worker, options.timeoutMs ?? HDF5_REQUEST_TIMEOUT_MS);
  }

  async open(path: string): Promise<Hdf5Reader> {
    return this.openReader(path, false);
  }

  /** @internal With `closesFiles`, closing the reader closes this set too. */
  async openReader(path: string, closesFiles: boolean): Promise<Hdf5Reader> {
    const byteSize = checkSuperblock(path);
    const fileId = (await this.call(path, { op: "open", path }, "cannot open as HDF5")) as number;
    const reader = new Hdf5Reader(path, byteSize, fileId, this, closesFiles);
    this.readers.add(reader);
    return reader;
  }

  /** @internal One request about `file`; every failure becomes a FalconPresetError naming it. */
  async call(file: string, message: Hdf5Operation, failure: string): Promise<unknown> {
    if (this.closed) throw new FalconPresetError(`${file}: ${failure} (the HDF5 reader is closed)`);
    try {
      return await this.worker.request(message, this.timeoutMs);
    } catch (cause) {
      throw new FalconPresetError(`${file}: ${failure} (${(cause as Error).message}); the file may be corrupt`, { cause });
    }
  }

  /** @internal */
  forget(reader: Hdf5Reader): void {
    this.readers.delete(reader);
  }

  close(): void {
    if (this.closed) return;
    for (const reader of this.readers) reader.close();
    this.closed = true;
    this.worker.release();
  }
}

export class Hdf5Reader {
  private closed = false;

  /** @internal Use Hdf5Files.open or Hdf5Reader.open. */
  constructor(
    readonly path: string,
    /** The file's size: uncompressed datasets cannot hold more. */
    readonly byteSize: number,
    private readonly fileId: number,
    private readonly files: Hdf5Files,
    private readonly closesFiles: boolean,
  ) {}

  /** Opens one file with a reader of its own; close() ends it. */
  static async open(path: string, options: Hdf5Options = {}): Promise<Hdf5Reader> {
    const files = await Hdf5Files.start(options);
    try {
      return await files.openReader(path, true);
    } catch (error) {
      files.close();
      throw error;
    }
  }

  /** Every dataset path in the file, without a leading slash. */
  async datasetPaths(): Promise<string[]> {
    return (await this.files.call(this.path, { op: "list", fileId: this.fileId }, "cannot list datasets")) as string[];
  }

  /** The dataset's dtype and shape, or undefined when there is none at `path`. */
  async dataset(path: string): Promise<Hdf5DatasetInfo | undefined> {
    const metadata = (await this.files.call(
      this.path,
      { op: "info", fileId: this.fileId, path, opaqueClass: H5T_OPAQUE },
      `cannot read ${path}`,
    )) as RawDatasetInfo | null;
    if (metadata === null) return undefined;
    let dtype: NativeSourceDType | undefined;
    if (metadata.type === H5T_FLOAT && metadata.littleEndian) {
      dtype = ({ 2: "float16", 4: "float32", 8: "float64" } as const)[metadata.size as 2 | 4 | 8];
    } else if (metadata.type === H5T_OPAQUE && metadata.size === 2 && metadata.tag === "bfloat16") {
      dtype = "bfloat16";
    }
    if (dtype === undefined) {
      throw new FalconPresetError(
        `${this.path}: dataset ${path} has an unsupported element type (HDF5 class ${metadata.type}, ${metadata.size} bytes${metadata.littleEndian ? "" : ", big-endian"}); expected float16, bfloat16, float32 or float64`,
      );
    }
    if (!metadata.shape.every((n) => Number.isSafeInteger(n) && n >= 0)) {
      throw new FalconPresetError(`${this.path}: dataset ${path} has a malformed shape [${metadata.shape.join(", ")}]`);
    }
    return { dtype, shape: metadata.shape };
  }

  /** The dataset's raw little-endian bytes, read in blocks of rows. */
  async readRaw(path: string, info: Hdf5DatasetInfo): Promise<Uint8Array> {
    const elementSize = HDF5_ELEMENT_BYTES[info.dtype];
    const rows = info.shape.length === 0 ? 1 : info.shape[0];
    const rowElements = info.shape.slice(1).reduce((a, b) => a * b, 1);
    const rowBytes = rowElements * elementSize;
    const out = new Uint8Array(rows * rowBytes);
    const rowsPerBlock = Math.max(1, Math.floor(READ_BLOCK_BYTES / Math.max(1, rowBytes)));
    for (let first = 0; first < rows; first += rowsPerBlock) {
      const count = Math.min(rowsPerBlock, rows - first);
      const block = (await this.files.call(
        this.path,
        { op: "read", fileId: this.fileId, path, shape: info.shape, firstRow: first, rows: count, rowBytes },
        `reading ${path} failed`,
      )) as ArrayBuffer;
      if (block.byteLength !== count * rowBytes) {
        throw new FalconPresetError(`${this.path}: reading ${path} returned ${block.byteLength} bytes, expected ${count * rowBytes}`);
      }
      out.set(new Uint8Array(block), first * rowBytes);
    }
    return out;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.files.forget(this);
    // A close after a failure has nothing to close: the worker is gone with its files.
    this.files.call(this.path, { op: "close", fileId: this.fileId }, "cannot close").catch(() => undefined);
    if (this.closesFiles) this.files.close();
  }
}
