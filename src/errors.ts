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
