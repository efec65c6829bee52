#include "backend.h"

#include <algorithm>
#include <limits>
#include <numeric>

#include "error.h"

namespace falcon {

ByteCount forward_memory_bytes(const ModelConfig& config, int64_t batch, int64_t length, bool temporary_cache) {
  const ByteCount rows = ByteCount(uint64_t(batch)) * uint64_t(length);
  // Per token: the result and the residual (D each), the attention output and its packed copy (2D),
  // the normed inputs (2D), the QKV projection, the MLP activations and their packed copy (2F), rotary tables.
  const uint64_t per_token_floats = uint64_t(6 * config.hidden_dim + config.qkv_rows() + 2 * config.ffn_dim + config.head_dim());
  // The step's token ids, positions, valid flags and output rows, and the attention's view of each slot.
  const uint64_t per_token_step_bytes = 2 * sizeof(int32_t) + sizeof(uint8_t) + sizeof(int64_t) + sizeof(int32_t) + sizeof(uint8_t);
  const ByteCount activations = rows * (per_token_floats * sizeof(float) + per_token_step_bytes);
  return temporary_cache ? activations + cache_memory_bytes(config, batch, length) : activations;
}

void Backend::require_own_pool(const KvPool& pool) const {
  require(std::string(pool.storage().backend()) == name(), ErrorKind::Input, [&] {
    return std::string("this KV cache lives on the ") + pool.storage().backend() + " backend, but the model runs on " + name();
  });
}

void validate_token_ids(const ModelConfig& config, const int32_t* ids, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const int32_t id = ids[r * cols + c];
      require(id >= 0 && id < config.vocab_size, ErrorKind::Input, [&] {
        return "tokenIds[" + std::to_string(r) + "][" + std::to_string(c) + "] = " + std::to_string(id) +
               " is out of range [0, " + std::to_string(config.vocab_size) + ")";
      });
    }
  }
}

void validate_request(const ModelConfig& config, const ForwardRequest& request) {
  require(request.batch > 0 && request.length > 0, ErrorKind::Input,
          "tokenIds must have shape [batch, length] with batch > 0 and length > 0");
  require(request.cache != nullptr, ErrorKind::Input, "a forward call needs a cache");
  require(request.cache->batch_size() == request.batch && int64_t(request.start.size()) == request.batch, ErrorKind::Input,
          "one cache sequence and one start index are needed per batch row");
  for (int64_t b = 0; b < request.batch; ++b) {
    const int64_t start = request.start[size_t(b)];
    require(start >= 0 && start <= request.cache->max_length() - request.length, ErrorKind::Input, [&] {
      return "row " + std::to_string(b) + ": cache update index " + std::to_string(start) + " + " +
             std::to_string(request.length) + " new tokens exceeds the cache's maxLength " +
             std::to_string(request.cache->max_length());
    });
  }
  validate_token_ids(config, request.token_ids, request.batch, request.length);
  for (int64_t b = 0; b < request.batch; ++b) {
    for (int64_t t = 0; t < request.length; ++t) {
      const size_t at = size_t(b * request.length + t);
      if (request.padding_mask != nullptr) {
        require(request.padding_mask[at] <= 1, ErrorKind::Input,
                [&] { return "paddingMask[" + std::to_string(b) + "][" + std::to_string(t) + "] must be 0 or 1"; });
      }
      if (request.position_ids != nullptr) {
        require(request.position_ids[at] >= 0, ErrorKind::Input,
                [&] { return "positionIds[" + std::to_string(b) + "][" + std::to_string(t) + "] must be non-negative"; });
      }
    }
  }
}

void validate_step(const ModelConfig& config, const KvPool& pool, const StepBatch& batch) {
  require(pool.fits(config), ErrorKind::Input, "the KV pool was made for a model of another shape");
  require(!batch.sequences.empty(), ErrorKind::Input, "a step needs at least one sequence");
  const int64_t tokens = batch.token_count();
  require(int64_t(batch.positions.size()) == tokens && int64_t(batch.valid.size()) == tokens, ErrorKind::Input, [&] {
    return "a step needs one position and one valid flag per token: " + std::to_string(tokens) + " token ids, " +
           std::to_string(batch.positions.size()) + " positions, " + std::to_string(batch.valid.size()) + " valid flags";
  });
  int64_t counted = 0;
  std::vector<int32_t> written;  // the blocks this step writes, to find any written twice
  for (size_t i = 0; i < batch.sequences.size(); ++i) {
    const StepSequence& seq = batch.sequences[i];
    const auto name = [i] { return "sequence " + std::to_string(i); };
    require(seq.count > 0, ErrorKind::Input, [&] { return name() + ": count must be positive, got " + std::to_string(seq.count); });
    require(seq.count <= tokens - counted, ErrorKind::Input, [&] {
      return name() + ": the sequences' counts add up to more than the step's " + std::to_string(tokens) + " token ids";
    });
    counted += seq.count;
    require(seq.start >= 0 && seq.start <= std::numeric_limits<int32_t>::max() - seq.count, ErrorKind::Input,
            [&] { return name() + ": start " + std::to_string(seq.start) + " is out of range"; });
    const int64_t end = seq.start + seq.count;
    require(seq.rope_length >= end, ErrorKind::Input, [&] {
      return name() + ": rope_length " + std::to_string(seq.rope_length) + " is shorter than its " + std::to_string(end) + " tokens";
    });
    const int64_t needed = (end - 1) / kKvBlockTokens + 1;
    require(seq.block_table != nullptr && seq.block_count >= needed, ErrorKind::Input, [&] {
      return name() + ": its block table has " + std::to_string(seq.block_table == nullptr ? 0 : seq.block_count) +
             " blocks but slots [0, " + std::to_string(end) + ") need " + std::to_string(needed);
    });
    for (int64_t k = 0; k < needed; ++k) {
      const int32_t block = seq.block_table[k];
      require(block >= 0 && block < pool.num_blocks(), ErrorKind::Input, [&] {
        return name() + ": block table entry " + std::to_string(k) + " = " + std::to_string(block) +
               " is outside the pool's " + std::to_string(pool.num_blocks()) + " blocks";
      });
    }
    for (int64_t k = seq.start / kKvBlockTokens; k < needed; ++k) written.push_back(seq.block_table[k]);
  }
  require(counted == tokens, ErrorKind::Input, [&] {
    return "the sequences' counts add up to " + std::to_string(counted) + " but the step has " + std::to_string(tokens) + " token ids";
  });
  std::sort(written.begin(), written.end());
  const auto twice = std::adjacent_find(written.begin(), written.end());
  require(twice == written.end(), ErrorKind::Input, [&] { return "block " + std::to_string(*twice) + " is written twice in one step"; });
  validate_token_ids(config, batch.token_ids.data(), 1, tokens);
  for (int64_t t = 0; t < tokens; ++t) {
    require(batch.valid[size_t(t)] <= 1, ErrorKind::Input, [&] { return "valid[" + std::to_string(t) + "] must be 0 or 1"; });
    require(batch.positions[size_t(t)] >= 0, ErrorKind::Input, [&] { return "positions[" + std::to_string(t) + "] must be non-negative"; });
  }
  for (size_t i = 0; i < batch.output_rows.size(); ++i) {
    const int64_t row = batch.output_rows[i];
    require(row >= 0 && row < tokens, ErrorKind::Input, [&] {
      return "output_rows[" + std::to_string(i) + "] = " + std::to_string(row) + " is outside the step's " + std::to_string(tokens) +
             " tokens";
    });
  }
}

void record_slots(KvPool& pool, const StepBatch& batch) {
  size_t row = 0;
  for (const StepSequence& seq : batch.sequences) {
    for (int64_t slot = seq.start; slot < seq.start + seq.count; ++slot, ++row) {
      const int32_t block = seq.block_table[slot / kKvBlockTokens];
      pool.valid(block)[slot % kKvBlockTokens] = batch.valid[row];
      pool.positions(block)[slot % kKvBlockTokens] = batch.positions[row];
    }
  }
}

StepBatch step_for_request(const ForwardRequest& request) {
  const KvCache& cache = *request.cache;
  const KvPool& pool = cache.pool();
  const int64_t rows = request.batch * request.length;
  StepBatch step;
  step.sequences.reserve(size_t(request.batch));
  step.token_ids.assign(request.token_ids, request.token_ids + rows);
  step.positions.resize(size_t(rows));
  step.valid.resize(size_t(rows));
  step.output_rows.resize(size_t(rows));
  std::iota(step.output_rows.begin(), step.output_rows.end(), int64_t(0));
  for (int64_t b = 0; b < request.batch; ++b) {
    const int64_t start = request.start[size_t(b)];
    const int32_t* table = cache.block_table(b);
    int32_t real_before = 0;
    for (int64_t slot = 0; slot < start; ++slot) real_before += pool.valid(table[slot / kKvBlockTokens])[slot % kKvBlockTokens];
    for (int64_t t = 0; t < request.length; ++t) {
      const size_t at = size_t(b * request.length + t);
      const uint8_t is_real = request.padding_mask == nullptr ? 1 : request.padding_mask[at];
      int32_t position = 0;
      if (request.position_ids != nullptr) {
        position = request.position_ids[at];
      } else if (is_real) {
        position = real_before++;
      }
      step.valid[at] = is_real;
      step.positions[at] = position;
    }
    // Dynamic NTK scales to the row's own length, never to a longer row of the same call.
    step.sequences.push_back(StepSequence{table, cache.blocks_per_row(), start, request.length, start + request.length});
  }
  return step;
}

}  // namespace falcon
