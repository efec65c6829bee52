#include "backend.h"

#include "error.h"

namespace falcon {

ByteCount forward_memory_bytes(const ModelConfig& config, int64_t batch, int64_t length, bool temporary_cache) {
  const ByteCount rows = ByteCount(uint64_t(batch)) * uint64_t(length);
  // Per token: the result and the residual (D each), the attention output and its packed copy (2D),
  // the normed inputs (2D), the QKV projection, the MLP activations and their packed copy (2F), rotary tables.
  const uint64_t per_token_floats = uint64_t(6 * config.hidden_dim + config.qkv_rows() + 2 * config.ffn_dim + config.head_dim());
  const ByteCount activations = rows * per_token_floats * sizeof(float);
  return temporary_cache ? activations + cache_memory_bytes(config, batch, length) : activations;
}

void validate_token_ids(const ModelConfig& config, const int32_t* ids, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const int32_t id = ids[r * cols + c];
      require(id >= 0 && id < config.vocab_size, ErrorKind::Input,
              "tokenIds[" + std::to_string(r) + "][" + std::to_string(c) + "] = " + std::to_string(id) +
                  " is out of range [0, " + std::to_string(config.vocab_size) + ")");
    }
  }
}

void validate_request(const ModelConfig& config, const ForwardRequest& request) {
  require(request.batch > 0 && request.length > 0, ErrorKind::Input,
          "tokenIds must have shape [batch, length] with batch > 0 and length > 0");
  require(int64_t(request.sequences.size()) == request.batch && int64_t(request.start.size()) == request.batch,
          ErrorKind::Input, "one cache sequence and one start index are needed per batch row");
  for (int64_t b = 0; b < request.batch; ++b) {
    const SequenceKv* sequence = request.sequences[size_t(b)];
    require(sequence != nullptr, ErrorKind::Input, "row " + std::to_string(b) + " has no cache sequence");
    const int64_t start = request.start[size_t(b)];
    require(start >= 0 && start + request.length <= sequence->capacity(), ErrorKind::Input,
            "row " + std::to_string(b) + ": cache update index " + std::to_string(start) + " + " +
                std::to_string(request.length) + " new tokens exceeds the cache's maxLength " +
                std::to_string(sequence->capacity()));
  }
  validate_token_ids(config, request.token_ids, request.batch, request.length);
  for (int64_t b = 0; b < request.batch; ++b) {
    for (int64_t t = 0; t < request.length; ++t) {
      const size_t at = size_t(b * request.length + t);
      if (request.padding_mask != nullptr) {
        require(request.padding_mask[at] <= 1, ErrorKind::Input,
                "paddingMask[" + std::to_string(b) + "][" + std::to_string(t) + "] must be 0 or 1");
      }
      if (request.position_ids != nullptr) {
        require(request.position_ids[at] >= 0, ErrorKind::Input,
                "positionIds[" + std::to_string(b) + "][" + std::to_string(t) + "] must be non-negative");
      }
    }
  }
}

}  // namespace falcon
