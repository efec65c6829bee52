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
  if (typeof value === "string") return `string ${quoted(value)}`;
  if (value === null || value === undefined) return String(value);
  if (Array.isArray(value)) return `an array of ${value.length}`;
  switch (typeof value) {
    case "object":
      return "an object";
    case "function":
    case "symbol":
      return `a ${typeof value}`;
    default:
      return `${typeof value} ${String(value)}`;
  }
}

/** A string from a file or a caller as a JSON string literal, cut to a length an error message can carry. */
export function quoted(text: string): string {
  return JSON.stringify(text.length > 40 ? `${text.slice(0, 40)}…` : text);
}
