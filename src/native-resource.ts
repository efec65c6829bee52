/** The owner of one native object: freed by dispose() (or `using`), or by the garbage collector otherwise. */
import { FalconDisposedError } from "./errors.js";

export abstract class NativeResource<Handle extends { dispose(): void }> {
  #handle: Handle | null;

  protected constructor(
    handle: Handle,
    private readonly what: string,
  ) {
    this.#handle = handle;
  }

  /** The native object; throws FalconDisposedError after dispose(). */
  protected get handle(): Handle {
    if (!this.#handle) throw new FalconDisposedError(`this ${this.what} has been disposed`);
    return this.#handle;
  }

  get disposed(): boolean {
    return this.#handle === null;
  }

  /** Frees the native memory now. */
  dispose(): void {
    this.#handle?.dispose();
    this.#handle = null;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.dispose();
  }
}
