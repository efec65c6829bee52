/**
 * The h5wasm side of hdf5.ts, run in a worker thread: a corrupt file can make HDF5 loop forever or
 * abort the WebAssembly module, and either must cost only this worker, never the caller's thread.
 * It answers one request at a time; errors are returned as messages, never thrown across.
 */
import { parentPort } from "node:worker_threads";

import h5wasm from "h5wasm/node";

import type { Hdf5Request, Hdf5Response } from "./hdf5.js";


const port = parentPort!;
const module = await h5wasm.ready;
const files = new Map<number, InstanceType<typeof h5wasm.File>>();
let nextFileId = 1;

function file(id: number): InstanceType<typeof h5wasm.File> {
  const found = files.get(id);
  if (found === undefined) throw new Error(`file ${id} is not open`);
  return found;
}

function handle(request: Hdf5Request): { value: unknown; transfer: ArrayBuffer[] } {
  switch (request.op) {
    case "open": {
      const id = nextFileId++;
      files.set(id, new h5wasm.File(request.path, "r"));
      return { value: id, transfer: [] };
    }
    case "list": {
      const fileId = file(request.fileId).file_id;
      const names = module
        .get_names(fileId, "/", true)
        .filter((name: string) => module.get_type(fileId, `/${name}`) === module.H5O_TYPE_DATASET);
      return { value: names, transfer: [] };
    }
    case "info": {
      const entity = file(request.fileId).get(request.path);
      if (!(entity instanceof h5wasm.Dataset)) return { value: null, transfer: [] };
      const metadata = entity.metadata;
      const opaqueTwoBytes = metadata.type === request.opaqueClass && metadata.size === 2;
      // h5py writes bfloat16 as 2-byte opaque data tagged with a dtype attribute (keras PR #19091).
      const tag = opaqueTwoBytes ? entity.attrs["dtype"]?.value : undefined;
      const value = {
        type: metadata.type,
        size: metadata.size,
        littleEndian: metadata.littleEndian,
        shape: metadata.shape ?? [],
        tag: typeof tag === "string" ? tag : null,
      };
      return { value, transfer: [] };
    }
    case "read": {
      const { shape, firstRow, rows, rowBytes } = request;
      const bytes = rows * rowBytes;
      const pointer = module._malloc(bytes || 1);
      if (pointer === 0) throw new Error(`out of memory for a ${bytes}-byte block`);
      try {
        const scalar = shape.length === 0;
        const blockShape = scalar ? null : [BigInt(rows), ...shape.slice(1).map(BigInt)];
        const blockOffset = scalar ? null : [BigInt(firstRow), ...shape.slice(1).map(() => 0n)];
        const strides = blockShape && blockShape.map(() => 1n);
        const status = module.get_dataset_data(file(request.fileId).file_id, `/${request.path}`, blockShape, blockOffset, strides, BigInt(pointer));
        if (status < 0) throw new Error(`status ${status}`);
        const block = module.HEAPU8.slice(pointer, pointer + bytes).buffer;
        return { value: block, transfer: [block] };
      } finally {
        module._free(pointer);
      }
    }
    case "close": {
      const open = files.get(request.fileId);
      files.delete(request.fileId);
      open?.close();
      return { value: null, transfer: [] };
    }
  }
}

port.on("message", (request: Hdf5Request) => {
  let response: Hdf5Response;
  let transfer: ArrayBuffer[] = [];
  try {
    const result = handle(request);
    response = { id: request.id, value: result.value };
    transfer = result.transfer;
  } catch (error) {
    const message = error instanceof Error ? error.message || error.name : String(error);
    response = { id: request.id, error: message };
  }
  port.postMessage(response, transfer);
});
port.postMessage({ id: 0, value: "ready" } satisfies Hdf5Response);
