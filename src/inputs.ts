/**
 * Token-id and padding-mask inputs: nested arrays or flat typed arrays with a shape, checked and
 * packed into the flat buffers the native core reads.
 */
import { totalmem } from "node:os";

import { describeValue, FalconInputError } from "./errors.js";

/** A row-major float32 tensor. */
export interface Tensor {
  data: Float32Array;
  shape: number[];
}

/** A flat integer batch with its [batch, length] shape. */
export interface ShapedIds {
  data: Int32Array | Uint8Array | Uint32Array | number[];
  shape: [number, number];
}

export type TokenIdsInput = number[][] | ShapedIds | Int32Array;
export type PaddingMaskInput = (number | boolean)[][] | ShapedIds | Int32Array | Uint8Array;

export interface BackboneInputs {
  tokenIds: TokenIdsInput;
  /** 1 = real token, 0 = padding. Default: all ones. */
  paddingMask?: PaddingMaskInput;
  /** Explicit positions for rotary models (default: cumsum(paddingMask) − 1, as HF generation does). */
  positionIds?: TokenIdsInput;
  /** Shape of a flat Int32Array tokenIds. */
  shape?: [number, number];
}

export interface PackedInputs {
  batch: number;
  length: number;
  tokenIds: Int32Array;
  paddingMask: Uint8Array | null;
  positionIds: Int32Array | null;
}

/** Batch columns and cache slots are addressed with int32 indices, natively and in the step buffers. */
const MAX_SEQUENCE_LENGTH = 0x7fffffff;

/** The memory this process may use at most: the machine's, or its cgroup limit when lower. */
function memoryLimitBytes(): number {
  const constrained = typeof process.constrainedMemory === "function" ? process.constrainedMemory() : 0;
  return constrained !== undefined && constrained > 0 ? Math.min(constrained, totalmem()) : totalmem();
}

/**
 * Refuses, before anything is allocated, what no machine running this could hold: rows of more
 * positions than int32 indices reach, or more bytes than its memory. `what` describes the
 * allocation, its bytes included; `remedy` (empty, or "; how to ask for less") ends the message.
 */
export function checkAllocation(what: string, length: number, bytes: number, remedy = ""): void {
  if (length > MAX_SEQUENCE_LENGTH) {
    throw new FalconInputError(`${what}: more than the ${MAX_SEQUENCE_LENGTH} tokens per sequence int32 indices reach${remedy}`);
  }
  const limit = memoryLimitBytes();
  if (bytes > limit) throw new FalconInputError(`${what}, more than the ${limit} bytes of memory this machine has${remedy}`);
}

/** checkAllocation for a [batch, length] batch of `bytesPerCell` bytes per cell. */
export function checkBatchFits(batch: number, length: number, bytesPerCell: number, what: string): void {
  const bytes = batch * length * bytesPerCell;
  checkAllocation(`${what}: a [${batch}, ${length}] batch needs ${bytes} bytes`, length, bytes);
}

/** A caller's list of token ids: an array or a typed array, whose length is then real (not a getter's). */
export function checkIdList(ids: unknown, what: string): ArrayLike<number> {
  if (!Array.isArray(ids) && !(ArrayBuffer.isView(ids) && !(ids instanceof DataView))) {
    throw new FalconInputError(`${what} takes an array of token ids, got ${describeValue(ids)}`);
  }
  return ids as ArrayLike<number>;
}

function isShaped(value: unknown): value is ShapedIds {
  return typeof value === "object" && value !== null && "data" in value && "shape" in value;
}

function checkShape(shape: unknown, name: string): [number, number] {
  if (!Array.isArray(shape) || shape.length !== 2 || !shape.every((n) => Number.isInteger(n) && n > 0)) {
    throw new FalconInputError(`${name} shape must be [batch, length] with positive integers, got ${describeValue(shape)}`);
  }
  return [shape[0], shape[1]];
}

/** Flattens a rectangular batch, checking every value with `check(value, row, col)`. */
function flatten(
  value: unknown,
  name: string,
  explicitShape: [number, number] | undefined,
  check: (value: unknown, row: number, col: number) => number,
): { flat: number[] | ArrayLike<number>; batch: number; length: number } {
  if (Array.isArray(value)) {
    if (value.length === 0) throw new FalconInputError(`${name} must have at least one row`);
    const length = Array.isArray(value[0]) ? value[0].length : -1;
    const flat: number[] = [];
    value.forEach((row: unknown, r: number) => {
      if (!Array.isArray(row) && !ArrayBuffer.isView(row)) {
        throw new FalconInputError(`${name}[${r}] must be an array of numbers (inputs are [batch, length])`);
      }
      const items = row as ArrayLike<unknown>;
      if (items.length !== length) {
        throw new FalconInputError(
          `${name}[${r}] has length ${items.length} but row 0 has length ${length}: batches must be rectangular (pad them and pass a paddingMask)`,
        );
      }
      for (let c = 0; c < items.length; c++) flat.push(check(items[c], r, c));
    });
    if (length === 0) throw new FalconInputError(`${name} rows must not be empty`);
    return { flat, batch: value.length, length };
  }
  let data: ArrayLike<unknown>;
  let shape: [number, number];
  if (isShaped(value)) {
    shape = checkShape(value.shape, name);
    data = value.data;
  } else if (ArrayBuffer.isView(value) && !(value instanceof DataView)) {
    if (!explicitShape) throw new FalconInputError(`${name} is a flat typed array: pass its shape ([batch, length]) as inputs.shape`);
    shape = explicitShape;
    data = value as unknown as ArrayLike<number>;
  } else {
    throw new FalconInputError(`${name} must be number[][], a typed array with a shape, or { data, shape }`);
  }
  if (data.length !== shape[0] * shape[1]) {
    throw new FalconInputError(`${name} holds ${data.length} values but its shape [${shape.join(", ")}] needs ${shape[0] * shape[1]}`);
  }
  const flat = new Array<number>(data.length);
  for (let i = 0; i < data.length; i++) flat[i] = check(data[i], Math.floor(i / shape[1]), i % shape[1]);
  return { flat, batch: shape[0], length: shape[1] };
}

/** Validates and packs inputs; ids are checked against the vocabulary here so errors name row and column. */
export function packInputs(inputs: BackboneInputs, vocabularySize: number): PackedInputs {
  if (typeof inputs !== "object" || inputs === null || !("tokenIds" in inputs)) {
    throw new FalconInputError("inputs must be an object with tokenIds (and optionally paddingMask)");
  }
  const explicitShape = inputs.shape === undefined ? undefined : checkShape(inputs.shape, "inputs");
  const ids = flatten(inputs.tokenIds, "tokenIds", explicitShape, (value, r, c) => {
    if (typeof value !== "number" || !Number.isInteger(value)) {
      throw new FalconInputError(`tokenIds[${r}][${c}] = ${String(value)} is not an integer`);
    }
    if (value < 0 || value >= vocabularySize) {
      throw new FalconInputError(`tokenIds[${r}][${c}] = ${value} is out of range [0, ${vocabularySize})`);
    }
    return value;
  });
  const shape: [number, number] = [ids.batch, ids.length];
  const sameShape = (name: string, batch: number, length: number) => {
    if (batch !== ids.batch || length !== ids.length) {
      throw new FalconInputError(`${name} has shape [${batch}, ${length}] but tokenIds has shape [${shape.join(", ")}]`);
    }
  };
  let paddingMask: Uint8Array | null = null;
  if (inputs.paddingMask !== undefined && inputs.paddingMask !== null) {
    const mask = flatten(inputs.paddingMask, "paddingMask", shape, (value, r, c) => {
      if (value === true || value === 1) return 1;
      if (value === false || value === 0) return 0;
      throw new FalconInputError(`paddingMask[${r}][${c}] = ${String(value)} must be 0 or 1`);
    });
    sameShape("paddingMask", mask.batch, mask.length);
    paddingMask = Uint8Array.from(mask.flat);
  }
  let positionIds: Int32Array | null = null;
  if (inputs.positionIds !== undefined && inputs.positionIds !== null) {
    const positions = flatten(inputs.positionIds, "positionIds", shape, (value, r, c) => {
      if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value > 0x7fffffff) {
        throw new FalconInputError(`positionIds[${r}][${c}] = ${String(value)} must be a non-negative integer`);
      }
      return value;
    });
    sameShape("positionIds", positions.batch, positions.length);
    positionIds = Int32Array.from(positions.flat);
  }
  return { batch: ids.batch, length: ids.length, tokenIds: Int32Array.from(ids.flat), paddingMask, positionIds };
}
