/**
 * Token samplers for generate(): greedy, top-k, top-p (nucleus), temperature and random sampling, as
 * keras-hub's samplers define them (same defaults: k = 5, p = 0.1, temperature = 1).
 *
 * Everything here works on one row of logits (a Float32Array and an offset) and only ever looks at the
 * first `allowed` ids: ids at or above the tokenizer's vocabulary size (the padded rows of a model
 * vocabulary such as falcon-rw-1b's 50304 > 50257) count as -Infinity and are never picked.
 *
 * Randomness comes from a seeded xoshiro128** generator, one independent stream per batch row, so a
 * given seed reproduces the same tokens on every run, every machine and any batch composition.
 */
import { describeValue, FalconInputError } from "./errors.js";

export type SamplerType = "greedy" | "topK" | "topP" | "temperature" | "random";

export interface StochasticSamplerOptions {
  /** Logits are divided by it before the softmax (default 1). 0 means greedy. */
  temperature?: number;
  /** Seed of the sampler's random streams. Default: a fresh random seed (not reproducible). */
  seed?: number;
}

export type SamplerConfig =
  | { type: "greedy" }
  | ({ type: "topK"; /** Candidates (default 5). */ k?: number } & StochasticSamplerOptions)
  | ({ type: "topP"; /** Probability mass kept (default 0.1). */ p?: number; /** Also keep at most k (default: no limit). */ k?: number } & StochasticSamplerOptions)
  | ({ type: "temperature" } & StochasticSamplerOptions)
  | ({ type: "random" } & StochasticSamplerOptions);

/** A sampler name (with its defaults) or a configuration. */
export type SamplerSpec = SamplerType | SamplerConfig;

/** A sampler configuration with every default filled in. */
export interface ResolvedSamplerConfig {
  type: SamplerType;
  k: number | null;
  p: number | null;
  temperature: number;
  seed: number;
}

/** Picks token ids from rows of logits; create one per generate call. */
export interface TokenSampler {
  readonly config: ResolvedSamplerConfig;
  /** A token id in [0, allowed) for batch row `row`, from logits[offset .. offset + allowed). */
  sample(logits: Float32Array, offset: number, allowed: number, row: number): number;
}

const SAMPLER_TYPES: readonly SamplerType[] = ["greedy", "topK", "topP", "temperature", "random"];
const DEFAULT_K = 5;
const DEFAULT_P = 0.1;

// ---------------------------------------------------------------------------------------------------
// Seeded random numbers.

/** splitmix32 step, used to spread a seed over the generator state. */
function splitmix32(state: number): [number, number] {
  const next = (state + 0x9e3779b9) | 0;
  let z = next;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return [next, (z ^ (z >>> 16)) >>> 0];
}

/** xoshiro128**: small, fast, statistically good; reproducible bit for bit from its seed. */
export class SeededRandom {
  #s0: number;
  #s1: number;
  #s2: number;
  #s3: number;

  /** `seed` is any non-negative safe integer; `stream` selects an independent sequence (e.g. a batch row). */
  constructor(seed: number, stream = 0) {
    let state = (Math.floor(seed / 0x100000000) ^ Math.imul(stream + 1, 0x632be5ab)) | 0;
    let mixed: number;
    [state, mixed] = splitmix32(state ^ (seed >>> 0));
    this.#s0 = mixed;
    [state, mixed] = splitmix32(state);
    this.#s1 = mixed;
    [state, mixed] = splitmix32(state);
    this.#s2 = mixed;
    [, mixed] = splitmix32(state);
    this.#s3 = mixed;
    if ((this.#s0 | this.#s1 | this.#s2 | this.#s3) === 0) this.#s0 = 1;
  }

  /** A uniform 32-bit unsigned integer. */
  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.#s1, 5), 7), 9) >>> 0;
    const t = this.#s1 << 9;
    this.#s2 ^= this.#s0;
    this.#s3 ^= this.#s1;
    this.#s1 ^= this.#s2;
    this.#s0 ^= this.#s3;
    this.#s2 ^= t;
    this.#s3 = rotl(this.#s3, 11);
    return result;
  }

  /** A uniform double in [0, 1) with 53 random bits. */
  next(): number {
    const high = this.nextUint32() >>> 5;
    const low = this.nextUint32() >>> 6;
    return (high * 67108864 + low) / 9007199254740992;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** A random seed for samplers created without one. */
function freshSeed(): number {
  const words = crypto.getRandomValues(new Uint32Array(2));
  return (words[0]! & 0x1fffff) * 0x100000000 + words[1]!;
}

// ---------------------------------------------------------------------------------------------------
// Pure functions over one row of logits. `allowed` ids are considered: logits[offset .. offset + allowed).

function checkRow(logits: Float32Array, offset: number, allowed: number): void {
  if (!Number.isInteger(allowed) || allowed <= 0 || offset < 0 || offset + allowed > logits.length) {
    throw new FalconInputError(`a logits row needs ${allowed} values at offset ${offset}, the buffer holds ${logits.length}`);
  }
}

/** The id of the largest logit; the lowest id wins ties (as torch.argmax); NaN counts as -Infinity. */
export function argmax(logits: Float32Array, offset: number, allowed: number): number {
  checkRow(logits, offset, allowed);
  let best = 0;
  let bestValue = -Infinity;
  for (let i = 0; i < allowed; i++) {
    const value = logits[offset + i]!;
    if (value > bestValue) {
      bestValue = value;
      best = i;
    }
  }
  return best;
}

/** True when id `a` ranks before id `b`: larger logit first, then the lower id. */
function ranksBefore(logits: Float32Array, offset: number, a: number, b: number): boolean {
  const va = logits[offset + a]!;
  const vb = logits[offset + b]!;
  return va > vb || (va === vb && a < b) || (Number.isNaN(vb) && !Number.isNaN(va));
}

/** Above this k, top-k selection sorts instead of inserting into a sorted prefix. */
const INSERTION_TOP_K_LIMIT = 128;

/** The ids of the k largest logits, best first (ties: lower id first). */
export function topKIndices(logits: Float32Array, offset: number, allowed: number, k: number, out?: Int32Array): Int32Array {
  checkRow(logits, offset, allowed);
  const count = Math.min(k, allowed);
  const best = out && out.length >= count ? out.subarray(0, count) : new Int32Array(count);
  if (count > INSERTION_TOP_K_LIMIT) {
    // Insertion costs allowed × k: seconds per token for k near the vocabulary size. Sorting every id
    // in the same order (ties and NaN included) costs allowed × log(allowed).
    const order = (a: number, b: number) => (ranksBefore(logits, offset, a, b) ? -1 : ranksBefore(logits, offset, b, a) ? 1 : a - b);
    best.set(Int32Array.from({ length: allowed }, (_, id) => id).sort(order).subarray(0, count));
    return best;
  }
  let filled = 0;
  for (let id = 0; id < allowed; id++) {
    if (filled === count && !ranksBefore(logits, offset, id, best[count - 1]!)) continue;
    // Insertion into the sorted prefix (k is small; for large k most ids fail the test above).
    let position = filled < count ? filled++ : count - 1;
    while (position > 0 && ranksBefore(logits, offset, id, best[position - 1]!)) {
      best[position] = best[position - 1]!;
      position--;
    }
    best[position] = id;
  }
  return best;
}

/**
 * Unnormalised probabilities exp((logit − max) / temperature) of `ids` (or of every allowed id when
 * ids is null) into `weights`; returns their sum. NaN and -Infinity logits get weight 0; when some
 * logits are +Infinity, those share the mass equally.
 */
function softmaxWeights(
  logits: Float32Array, offset: number, ids: Int32Array | null, count: number, temperature: number, weights: Float64Array,
): number {
  let max = -Infinity;
  for (let i = 0; i < count; i++) {
    const value = logits[offset + (ids ? ids[i]! : i)]!;
    if (value > max) max = value;
  }
  if (max === -Infinity) {
    // Every candidate is -Infinity or NaN: fall back to the first one rather than dividing by zero.
    weights.fill(0, 0, count);
    weights[0] = 1;
    return 1;
  }
  if (max === Infinity) {
    // The limit of the softmax as logits grow without bound: the +Infinity ones share all the mass
    // (exp(∞ − ∞) would make their weights NaN).
    let infinite = 0;
    for (let i = 0; i < count; i++) {
      const weight = logits[offset + (ids ? ids[i]! : i)]! === Infinity ? 1 : 0;
      weights[i] = weight;
      infinite += weight;
    }
    return infinite;
  }
  let sum = 0;
  for (let i = 0; i < count; i++) {
    const value = logits[offset + (ids ? ids[i]! : i)]!;
    const weight = value > -Infinity ? Math.exp((value - max) / temperature) : 0;
    weights[i] = weight;
    sum += weight;
  }
  return sum;
}

/** Inverse-CDF draw: the index i where the running sum of weights passes u · total. */
function pick(weights: Float64Array, count: number, total: number, u: number): number {
  const target = u * total;
  let running = 0;
  let last = 0;
  for (let i = 0; i < count; i++) {
    const weight = weights[i]!;
    if (weight <= 0) continue;
    running += weight;
    last = i;
    if (target < running) return i;
  }
  return last;  // rounding left target at the very end
}

/** Scratch buffers a sampler reuses so that sampling allocates nothing per token. */
export class SamplerScratch {
  /** Output: candidate ids and their weights or probabilities. */
  ids = new Int32Array(0);
  weights = new Float64Array(0);
  /** top-p work space: candidate ids (with k), their probabilities, the selected candidates. */
  candidates = new Int32Array(0);
  probabilities = new Float64Array(0);
  selected = new Int32Array(0);
  flags = new Uint8Array(0);

  ensure(size: number): void {
    if (this.ids.length < size) {
      this.ids = new Int32Array(size);
      this.weights = new Float64Array(size);
      this.candidates = new Int32Array(size);
      this.probabilities = new Float64Array(size);
      this.selected = new Int32Array(size);
      this.flags = new Uint8Array(size);
    }
  }
}

/** Samples from softmax(logits / temperature) over every allowed id, with the uniform draw `u` ∈ [0, 1). */
export function sampleRandom(
  logits: Float32Array, offset: number, allowed: number, temperature: number, u: number, scratch = new SamplerScratch(),
): number {
  checkRow(logits, offset, allowed);
  if (temperature === 0) return argmax(logits, offset, allowed);
  scratch.ensure(allowed);
  const total = softmaxWeights(logits, offset, null, allowed, temperature, scratch.weights);
  return pick(scratch.weights, allowed, total, u);
}

/** Samples among the k largest logits (keras-hub TopKSampler). */
export function sampleTopK(
  logits: Float32Array, offset: number, allowed: number, k: number, temperature: number, u: number, scratch = new SamplerScratch(),
): number {
  checkRow(logits, offset, allowed);
  if (temperature === 0) return argmax(logits, offset, allowed);
  const count = Math.min(k, allowed);
  scratch.ensure(count);
  const ids = topKIndices(logits, offset, allowed, count, scratch.ids);
  const total = softmaxWeights(logits, offset, ids, count, temperature, scratch.weights);
  return ids[pick(scratch.weights, count, total, u)]!;
}

/**
 * The nucleus of a row (keras-hub TopPSampler): ids sorted by probability, kept while the mass
 * before them is below p, so the smallest set whose mass reaches p (at least one id). With k, only
 * the k most likely ids are candidates. Returns the ids best first and their probabilities
 * (normalised over all candidates, not over the nucleus).
 */
export function topPNucleus(
  logits: Float32Array, offset: number, allowed: number, p: number, temperature: number, k: number | null = null,
  scratch = new SamplerScratch(),
): { ids: Int32Array; probabilities: Float64Array } {
  checkRow(logits, offset, allowed);
  const size = selectNucleus(logits, offset, allowed, p, temperature, k, scratch);
  const order = Array.from({ length: size }, (_, n) => n)
    .sort((a, b) => scratch.weights[b]! - scratch.weights[a]! || scratch.ids[a]! - scratch.ids[b]!);
  return { ids: Int32Array.from(order, (n) => scratch.ids[n]!), probabilities: Float64Array.from(order, (n) => scratch.weights[n]!) };
}

/**
 * Leaves the nucleus in scratch.ids[0..n) with its probabilities in scratch.weights[0..n), in
 * candidate order (ids ascending, or top-k rank with k); returns n. A quickselect over the order
 * (probability descending, id ascending) finds it in expected linear time: no sort, however flat the
 * distribution (a 50k-token row with p = 0.9 can have tens of thousands of ids in its nucleus).
 */
function selectNucleus(
  logits: Float32Array, offset: number, allowed: number, p: number, temperature: number, k: number | null,
  scratch: SamplerScratch,
): number {
  const count = k === null ? allowed : Math.min(k, allowed);
  scratch.ensure(allowed);
  const ids = k !== null && k < allowed ? topKIndices(logits, offset, allowed, count, scratch.candidates) : null;
  const probabilities = scratch.probabilities;
  const total = softmaxWeights(logits, offset, ids, count, temperature, probabilities);
  const work = scratch.selected;
  let size = 0;
  for (let i = 0; i < count; i++) {
    probabilities[i] = probabilities[i]! / total;
    if (probabilities[i]! > 0) work[size++] = i;
  }
  // Candidates are compared by probability, then by their index (id order, or rank with k).
  const better = (a: number, b: number): boolean =>
    probabilities[a]! > probabilities[b]! || (probabilities[a]! === probabilities[b]! && a < b);
  // work[0..lo) is in the nucleus, work[hi..size) is out, work[lo..hi) is undecided.
  let lo = 0;
  let hi = size;
  let mass = 0;
  while (lo < hi && mass < p) {
    const middle = (lo + hi) >>> 1;
    const pivot = work[middle]!;
    work[middle] = work[hi - 1]!;
    work[hi - 1] = pivot;
    let store = lo;
    let massBetter = 0;
    for (let j = lo; j < hi - 1; j++) {
      const candidate = work[j]!;
      if (better(candidate, pivot)) {
        work[j] = work[store]!;
        work[store++] = candidate;
        massBetter += probabilities[candidate]!;
      }
    }
    work[hi - 1] = work[store]!;
    work[store] = pivot;
    if (mass + massBetter >= p) {
      hi = store;  // the cut falls among the better ones
    } else {
      mass += massBetter + probabilities[pivot]!;
      lo = store + 1;
    }
  }
  // Candidate order (not probability order) keeps this linear; the draw's distribution is the same.
  const kept = scratch.flags;
  kept.fill(0, 0, count);
  for (let n = 0; n < lo; n++) kept[work[n]!] = 1;
  let n = 0;
  for (let i = 0; i < count; i++) {
    if (!kept[i]) continue;
    scratch.ids[n] = ids ? ids[i]! : i;
    scratch.weights[n++] = probabilities[i]!;
  }
  return n;
}

/** Samples from the nucleus of the row (see topPNucleus). */
export function sampleTopP(
  logits: Float32Array, offset: number, allowed: number, p: number, temperature: number, u: number, k: number | null = null,
  scratch = new SamplerScratch(),
): number {
  checkRow(logits, offset, allowed);
  if (temperature === 0) return argmax(logits, offset, allowed);
  const kept = selectNucleus(logits, offset, allowed, p, temperature, k, scratch);
  let total = 0;
  for (let i = 0; i < kept; i++) total += scratch.weights[i]!;
  return scratch.ids[pick(scratch.weights, kept, total, u)]!;
}

// ---------------------------------------------------------------------------------------------------
// Configuration.

function checkSeed(seed: unknown): number {
  if (typeof seed !== "number" || !Number.isSafeInteger(seed) || seed < 0) {
    throw new FalconInputError(`sampler seed must be a non-negative integer, got ${describeValue(seed)}`);
  }
  return seed;
}

/** Fills in the defaults and validates a sampler spec; throws FalconInputError naming the field. */
export function resolveSamplerConfig(spec: SamplerSpec | undefined): ResolvedSamplerConfig {
  const config: Partial<SamplerConfig> & { type?: unknown } =
    spec === undefined ? { type: "greedy" } : typeof spec === "string" ? { type: spec } : spec;
  if (typeof config !== "object" || config === null || !SAMPLER_TYPES.includes(config.type as SamplerType)) {
    const got = typeof spec === "string" ? spec : describeValue(typeof spec === "object" && spec !== null ? spec.type : spec);
    throw new FalconInputError(`sampler must be one of ${SAMPLER_TYPES.map((t) => `"${t}"`).join(", ")} (or { type, ... }), got ${got}`);
  }
  const type = config.type as SamplerType;
  const fields = config as { k?: unknown; p?: unknown; temperature?: unknown; seed?: unknown };
  const allowedFields: Record<SamplerType, string[]> = {
    greedy: ["type"],
    topK: ["type", "k", "temperature", "seed"],
    topP: ["type", "p", "k", "temperature", "seed"],
    temperature: ["type", "temperature", "seed"],
    random: ["type", "temperature", "seed"],
  };
  for (const key of Object.keys(config)) {
    if (!allowedFields[type].includes(key)) {
      throw new FalconInputError(`sampler "${type}" has no option "${key}" (it takes ${allowedFields[type].slice(1).join(", ") || "no options"})`);
    }
  }
  const temperature = fields.temperature ?? 1;
  if (typeof temperature !== "number" || !Number.isFinite(temperature) || temperature < 0) {
    throw new FalconInputError(`sampler temperature must be a finite number ≥ 0, got ${describeValue(fields.temperature)}`);
  }
  let k: number | null = null;
  if (type === "topK" || (type === "topP" && fields.k !== undefined)) {
    k = (fields.k ?? DEFAULT_K) as number;
    if (typeof k !== "number" || !Number.isInteger(k) || k <= 0) {
      throw new FalconInputError(`sampler k must be a positive integer, got ${describeValue(fields.k)}`);
    }
  }
  let p: number | null = null;
  if (type === "topP") {
    p = (fields.p ?? DEFAULT_P) as number;
    if (typeof p !== "number" || !(p > 0 && p <= 1)) {
      throw new FalconInputError(`sampler p must be a number in (0, 1], got ${describeValue(fields.p)}`);
    }
  }
  const seed = fields.seed === undefined ? freshSeed() : checkSeed(fields.seed);
  return { type, k, p, temperature: type === "greedy" ? 0 : temperature, seed };
}

/** A sampler with its own random streams (one per batch row), seeded from the config. */
export function createSampler(spec?: SamplerSpec): TokenSampler {
  const config = resolveSamplerConfig(spec);
  const streams: SeededRandom[] = [];
  const scratch = new SamplerScratch();
  const uniform = (row: number): number => {
    let stream = streams[row];
    if (!stream) stream = streams[row] = new SeededRandom(config.seed, row);
    return stream.next();
  };
  return {
    config,
    sample(logits, offset, allowed, row) {
      switch (config.type) {
        case "greedy":
          return argmax(logits, offset, allowed);
        case "topK":
          return sampleTopK(logits, offset, allowed, config.k!, config.temperature, uniform(row), scratch);
        case "topP":
          return sampleTopP(logits, offset, allowed, config.p!, config.temperature, uniform(row), config.k, scratch);
        case "temperature":
        case "random":
          return sampleRandom(logits, offset, allowed, config.temperature, uniform(row), scratch);
      }
    },
  };
}
