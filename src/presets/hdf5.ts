/**
 * Reads HDF5 weight files with h5wasm, straight from disk (h5wasm's Node build reads through the
 * real file system, so a file is never loaded whole). Raw dataset bytes are copied out in row
 * blocks so the wasm heap stays small whatever the tensor size.
 */
import { closeSync, openSync, readSync, statSync } from "node:fs";

import h5wasm from "h5wasm/node";

import { FalconPresetError } from "../errors.js";
import type { NativeSourceDType } from "../native.js";

export interface Hdf5DatasetInfo {
  dtype: NativeSourceDType;
  shape: number[];
}

const HDF5_SIGNATURE = Buffer.from([0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a]);
const READ_BLOCK_BYTES = 64 * 1024 * 1024;
const H5T_FLOAT = 1;
const H5T_OPAQUE = 5;

/**
 * Checks the superblock's end-of-file address against the real size, so a truncated download is
 * reported as such instead of as an obscure HDF5 read failure deep inside a dataset.
 */
function checkSuperblock(file: string): void {
  let size: number;
  try {
    size = statSync(file).size;
  } catch {
    throw new FalconPresetError(`${file}: file not found`);
  }
  const header = Buffer.alloc(64);
  const fd = openSync(file, "r");
  let read: number;
  try {
    read = readSync(fd, header, 0, header.length, 0);
  } finally {
    closeSync(fd);
  }
  if (read < 16 || !header.subarray(0, 8).equals(HDF5_SIGNATURE)) {
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
  if (offsetSize !== 8 || read < eofAt + 8) throw new FalconPresetError(`${file}: malformed HDF5 superblock`);
  const expected = header.readBigUInt64LE(eofAt);
  if (expected > BigInt(size)) {
    throw new FalconPresetError(`${file}: truncated: the HDF5 superblock says ${expected} bytes but the file has ${size}`);
  }
}

type H5Module = Awaited<typeof h5wasm.ready>;
let loading: Promise<H5Module> | undefined;

export class Hdf5Reader {
  private constructor(
    readonly path: string,
    private readonly file: InstanceType<typeof h5wasm.File>,
    private readonly module: H5Module,
  ) {}

  static async open(path: string): Promise<Hdf5Reader> {
    checkSuperblock(path);
    loading ??= h5wasm.ready;
    const module = await loading;
    try {
      return new Hdf5Reader(path, new h5wasm.File(path, "r"), module);
    } catch (cause) {
      throw new FalconPresetError(`${path}: cannot open as HDF5 (${(cause as Error).message})`, { cause });
    }
  }

  /** Every dataset path in the file, without a leading slash. */
  datasetPaths(): string[] {
    const module = this.module;
    try {
      return module
        .get_names(this.file.file_id, "/", true)
        .filter((name: string) => module.get_type(this.file.file_id, `/${name}`) === module.H5O_TYPE_DATASET);
    } catch (cause) {
      throw new FalconPresetError(`${this.path}: cannot list datasets (${(cause as Error).message})`, { cause });
    }
  }

  /** The dataset's dtype and shape, or undefined when there is none at `path`. */
  dataset(path: string): Hdf5DatasetInfo | undefined {
    let entity;
    try {
      entity = this.file.get(path);
    } catch (cause) {
      throw new FalconPresetError(`${this.path}: cannot read ${path} (${(cause as Error).message})`, { cause });
    }
    if (!(entity instanceof h5wasm.Dataset)) return undefined;
    const metadata = entity.metadata;
    const shape = metadata.shape ?? [];
    let dtype: NativeSourceDType | undefined;
    if (metadata.type === H5T_FLOAT && metadata.littleEndian) {
      dtype = ({ 2: "float16", 4: "float32", 8: "float64" } as const)[metadata.size as 2 | 4 | 8];
    } else if (metadata.type === H5T_OPAQUE && metadata.size === 2) {
      // h5py writes bfloat16 as 2-byte opaque data tagged with a dtype attribute (keras PR #19091).
      const tag = entity.attrs["dtype"]?.value;
      if (tag === "bfloat16") dtype = "bfloat16";
    }
    if (dtype === undefined) {
      throw new FalconPresetError(
        `${this.path}: dataset ${path} has an unsupported element type (HDF5 class ${metadata.type}, ${metadata.size} bytes${metadata.littleEndian ? "" : ", big-endian"}); expected float16, bfloat16, float32 or float64`,
      );
    }
    return { dtype, shape };
  }

  /** The dataset's raw little-endian bytes, read in blocks of rows. */
  readRaw(path: string, info: Hdf5DatasetInfo): Uint8Array {
    const module = this.module;
    const elementSize = { float16: 2, bfloat16: 2, float32: 4, float64: 8 }[info.dtype];
    const rows = info.shape.length === 0 ? 1 : info.shape[0];
    const rowElements = info.shape.slice(1).reduce((a, b) => a * b, 1);
    const rowBytes = rowElements * elementSize;
    const out = new Uint8Array(rows * rowBytes);
    const rowsPerBlock = Math.max(1, Math.floor(READ_BLOCK_BYTES / Math.max(1, rowBytes)));
    const pointer = module._malloc(Math.min(rows, rowsPerBlock) * rowBytes || 1);
    if (pointer === 0) throw new FalconPresetError(`${this.path}: out of memory reading ${path}`);
    try {
      for (let first = 0; first < rows; first += rowsPerBlock) {
        const count = Math.min(rowsPerBlock, rows - first);
        const blockShape = info.shape.length === 0 ? null : [BigInt(count), ...info.shape.slice(1).map(BigInt)];
        const blockOffset = info.shape.length === 0 ? null : [BigInt(first), ...info.shape.slice(1).map(() => 0n)];
        const strides = blockShape && blockShape.map(() => 1n);
        const status = module.get_dataset_data(this.file.file_id, `/${path}`, blockShape, blockOffset, strides, BigInt(pointer));
        if (status < 0) throw new Error(`status ${status}`);
        out.set(module.HEAPU8.subarray(pointer, pointer + count * rowBytes), first * rowBytes);
      }
    } catch (cause) {
      throw new FalconPresetError(`${this.path}: reading ${path} failed (${(cause as Error).message}); the file may be corrupt`, {
        cause,
      });
    } finally {
      module._free(pointer);
    }
    return out;
  }

  close(): void {
    this.file.close();
  }
}
