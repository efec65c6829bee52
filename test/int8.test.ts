/**
 * int8 (README "dtype": symmetric int8 weights with one float32 scale per output row, each matmul's input
 * rows quantised in blocks of 256) at every valid position of every run the fixtures hold, on every float32
 * fixture model:
 *
 * - against the int8 scheme itself, computed in float64 by test/helpers/reference-forward.ts on the models
 *   it covers (keras-hub FalconBackbone's architecture: the keras models and hf/rw_alibi_mha_sequential):
 *   the stored weights bit for bit, the logits to float32 accumulation error.
 * - against the float32 model, within the error the scheme itself has on these models (INT8_ERROR below).
 */
import { describeQuantisedFixtureModels, describeRandomQuantisedModel, type QuantisedDtype } from "./helpers/quantised-scheme.js";
import { INT8_EVERYWHERE, int8Weight } from "./helpers/reference-forward.js";

/**
 * int8 against float32, relative to the run's largest |float32 logit| (at least 1). The scheme's own error,
 * computed by the float64 reference (INT8_EVERYWHERE against float64; `npm run bench:int8-error` breaks it
 * down by matmul), peaks at 4.52 % on keras h2_d32 (run b1_s8), 4.01 % on h3_d24, 3.29 % on h4_d64 and
 * 2.27 % on hf rw_alibi_mha_sequential; the implementation adds at most SCHEME_TOLERANCE and float32's
 * ~1e-6, and measures ≤ 2.43 % on the other HF fixture models. These models are 24–64 wide, so a logit
 * averages few rounding errors. Activation blocks of 64, 32 or 16 inputs, or q8_0's per-32 weight scales
 * with 32-input activation blocks, leave each keras model measured above 3 % too (3.2–5.0 %): no standard
 * int8 scheme holds 3 % here. 5 % is the bound the scheme holds on every fixture model, with about 0.5 % to spare.
 */
const INT8_ERROR = 0.05;

const int8Dtype: QuantisedDtype = { dtype: "int8", scheme: INT8_EVERYWHERE, weightOf: int8Weight, quantisedBy: "the scheme", float32Error: INT8_ERROR };

// hidden 66 (6 heads of 11) and intermediate 602 (blocks of 256, 256 and 90 inputs); the fixture models
// are 24–256 wide, one block each.
describeRandomQuantisedModel("a random model whose widths cross quantisation blocks and are not multiples of 4: int8", int8Dtype);

await describeQuantisedFixtureModels(int8Dtype);
