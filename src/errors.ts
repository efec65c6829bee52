/**
 * Every error this library throws on purpose is a FalconError, so callers can tell
 * "the model refused this input" from a bug. Subclasses name the kind of problem.
 */
export class FalconError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A call's inputs are malformed: bad shape, id out of range, non-0/1 mask, cache misuse. */
export class FalconInputError extends FalconError {}

/** A model configuration is invalid or unsupported. */
export class FalconConfigError extends FalconError {}

/** A preset or checkpoint on disk is missing, malformed, truncated or inconsistent with its config. */
export class FalconPresetError extends FalconError {}

/** The native addon could not be loaded. */
export class FalconNativeLoadError extends FalconError {}

/** A native object was used after dispose(). */
export class FalconDisposedError extends FalconError {}

/**
 * A short description of a value read from a file or passed by a caller, for error messages:
 * bounded whatever the value (JSON.stringify overflows the stack on deeply nested arrays and throws
 * on cycles).
 */
export function describeValue(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return `an array of ${value.length}`;
  switch (typeof value) {
    case "string":
      return `string ${JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value)}`;
    case "object":
      return "an object";
    case "function":
    case "symbol":
      return `a ${typeof value}`;
    default:
      return `${typeof value} ${String(value)}`;
  }
}
