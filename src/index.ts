export { FalconBackbone, FalconKvCache, isFalconDevice, TokenEmbedding } from "./backbone.js";
export { FalconCausalLM } from "./causal-lm.js";
export type { CausalLMFromPresetOptions, FalconCausalLMOptions } from "./causal-lm.js";
export {
  ChatTemplate,
  DEFAULT_CHAT_TEMPLATE,
  FalconChatMessageError,
  MAX_CHAT_CONTENT_PARTS,
  MAX_CHAT_MESSAGES,
  MAX_CHAT_TEMPLATE_CHARS,
  MAX_CHAT_TEXT_CHARS,
  defaultChatTemplate,
  loadChatTemplate,
  renderChat,
} from "./chat-template.js";
export type { ChatMessage, ChatRole, ChatTemplateOptions, ChatTextPart, RenderChatOptions } from "./chat-template.js";
export type { GenerateOptions, StreamPiece } from "./generate.js";
export { Engine } from "./engine/engine.js";
export type {
  Completion,
  CompletionLogprob,
  CompleteOptions,
  CompleteStreamOptions,
  CompletionChunk,
  EngineGenerateOptions,
  EngineOptions,
  KvCacheDType,
  EngineStats,
  FinishReason,
  TokenLogprob,
} from "./engine/engine.js";
export { createServer } from "./server/index.js";
export type { FalconServer, ListenOptions, RequestLogEntry, ServerOptions } from "./server/options.js";
export { FalconCausalLMPreprocessor } from "./preprocessor.js";
export type {
  CausalLMTrainingBatch,
  FalconCausalLMPreprocessorOptions,
  GeneratePreprocessOptions,
  PackedPrompts,
  PaddedPrompts,
  PromptInput,
} from "./preprocessor.js";
export {
  SamplerScratch,
  SeededRandom,
  argmax,
  createSampler,
  resolveSamplerConfig,
  sampleRandom,
  sampleTopK,
  sampleTopP,
  topKIndices,
  topPNucleus,
} from "./samplers.js";
export type { ResolvedSamplerConfig, SamplerConfig, SamplerSpec, SamplerType, StochasticSamplerOptions, TokenSampler } from "./samplers.js";
export { TokenStreamDecoder } from "./stream-decoder.js";
export type { CreateCacheOptions, FalconBackboneOptions, FalconDevice, FromPresetOptions } from "./backbone.js";
export { FALCON_DTYPES, describeVariant, parameterCount, weightBytes } from "./config.js";
export type { BlockLayout, FalconBackboneConfig, FalconDType, FalconVariant, PositionEncoding, ResolvedBackboneConfig, RopeScaling } from "./config.js";
export {
  FalconConfigError,
  FalconDisposedError,
  FalconError,
  FalconInputError,
  FalconNativeLoadError,
  FalconPresetError,
} from "./errors.js";
export type { BackboneInputs, PaddingMaskInput, ShapedIds, Tensor, TokenIdsInput } from "./inputs.js";
export { BUILTIN_PRESETS } from "./presets/builtin.js";
export type { BuiltinPreset, PresetMetadata } from "./presets/builtin.js";
export type { HubDownloadProgress, HubOptions, PresetHandleOptions } from "./presets/hub.js";
export type { WriteKerasPresetOptions } from "./presets/keras-export.js";
export type { NativeDType, NativeModelInfo } from "./native.js";
export { nativeMemoryStats, runtimeInfo, setIsa, setNumThreads } from "./runtime.js";
export type { CpuIsa, NativeMemoryStats, RuntimeInfo } from "./runtime.js";
export { FalconTokenizer } from "./tokenizer.js";
