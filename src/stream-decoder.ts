/**
 * Incremental detokenisation that never splits a UTF-8 character: each token's raw bytes go through a
 * streaming TextDecoder, which holds back an unfinished character until its last byte arrives. The
 * pieces concatenated are exactly tokenizer.decode() of all the ids.
 */
import type { FalconTokenizer } from "./tokenizer.js";

export class TokenStreamDecoder {
  readonly #tokenizer: FalconTokenizer;
  readonly #skip: (id: number) => boolean;
  /** ignoreBOM keeps a leading U+FEFF, as FalconTokenizer.decode does. */
  readonly #decoder = new TextDecoder("utf-8", { ignoreBOM: true });
  readonly #one = new Int32Array(1);

  /** `skip(id)` true drops a token (the start and end tokens in generated text). */
  constructor(tokenizer: FalconTokenizer, skip: (id: number) => boolean = () => false) {
    this.#tokenizer = tokenizer;
    this.#skip = skip;
  }

  /** The text that this token completes; "" while a character is still unfinished. */
  push(id: number): string {
    if (this.#skip(id)) return "";
    this.#one[0] = id;
    return this.#decoder.decode(this.#tokenizer.decodeBytes(this.#one), { stream: true });
  }

  /** Whatever is held back (an unfinished character becomes U+FFFD, as in a full decode); resets the decoder. */
  flush(): string {
    return this.#decoder.decode();
  }
}
