#include "engine.h"

#include <algorithm>
#include <new>
#include <utility>

#include "thread_pool.h"

namespace falcon {

namespace {

constexpr auto kRateWindow = std::chrono::seconds(5);
constexpr auto kRateSampleInterval = std::chrono::milliseconds(100);
// A request's prompt plus new tokens: int32 positions, and a bound far beyond any model's context.
constexpr int64_t kMaxRequestTokens = int64_t(1) << 30;

}  // namespace

EngineEvent error_event(uint64_t request, const std::exception& failure) {
  EngineEvent event;
  event.request = request;
  event.finish = FinishReason::Error;
  if (const auto* error = dynamic_cast<const Error*>(&failure)) event.error_kind = error->kind();
  const bool out_of_memory = dynamic_cast<const std::bad_alloc*>(&failure) != nullptr;
  event.error = std::string("the engine step failed: ") + (out_of_memory ? "out of memory" : failure.what());
  return event;
}

Engine::Request::Request(EngineRequest p) : params(std::move(p)), sampler(params.sampler) {
  // Logprobs and returned logits read the whole row; so does a sampler needing more candidates than a backend ranks.
  const bool whole = params.top_logprobs >= 0 || params.return_logits;
  const int64_t candidates = whole ? 0 : sampler.candidates_needed(params.allowed_vocabulary);
  wanted.candidates = candidates <= kMaxRankedCandidates ? candidates : 0;
  wanted.allowed = params.allowed_vocabulary;
  // A sampler over the whole softmax needs only its token, which a backend can draw (each step's draw
  // is taken as the step is planned).
  if (!whole) {
    const SequenceSampler::DeviceDraw draw = sampler.device_draw(params.allowed_vocabulary);
    wanted.temperature = draw.temperature;
    wanted.top_p = draw.top_p;
  }
}

const char* finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::None: return "";
    case FinishReason::Stop: return "stop";
    case FinishReason::Length: return "length";
    case FinishReason::Cancelled: return "cancelled";
    case FinishReason::Error: return "error";
  }
  return "";
}

Engine::Engine(std::unique_ptr<StepRunner> runner, const EngineConfig& config, EventSink sink)
    : runner_(std::move(runner)),
      config_(config),
      sink_(std::move(sink)),
      vocab_size_(runner_->vocab_size()),
      num_blocks_(runner_->num_blocks()),
      blocks_(num_blocks_, config.prefix_caching && !config.length_dependent_rotary),
      scheduler_({config.max_batch_tokens, config.max_sequences, config.length_dependent_rotary}, blocks_) {
  require(config.max_batch_tokens <= (int64_t(1) << 20), ErrorKind::Input, "maxBatchTokens must be at most 2^20");
  require(config.max_sequences <= 65536, ErrorKind::Input, "maxSequences must be at most 65536");
  // Logits come back for at most one row per running sequence: whole, as its ranked candidates, or as its drawn token.
  const ByteCount row_bytes = ByteCount(uint64_t(vocab_size_)) * sizeof(float) +
                              ByteCount(uint64_t(kMaxRankedCandidates)) * (sizeof(int32_t) + sizeof(float)) + sizeof(int32_t) +
                              sizeof(RowReturned);
  require_memory(ByteCount(uint64_t(config.max_sequences)) * row_bytes, ErrorKind::Input,
                 "logits for " + std::to_string(config.max_sequences) + " sequences (maxSequences × vocabulary)");
  logits_.resize(size_t(config.max_sequences) * size_t(vocab_size_));
  const size_t rows = size_t(config.max_sequences);
  wanted_.reserve(rows);
  candidate_ids_.resize(rows * size_t(kMaxRankedCandidates));
  candidate_values_.resize(rows * size_t(kMaxRankedCandidates));
  drawn_tokens_.resize(rows);
  returned_.resize(rows);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    published_.blocks = blocks_.counts();
  }
  thread_ = std::thread([this] { run(); });
}

Engine::~Engine() { shutdown(); }

void Engine::shutdown() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

uint64_t Engine::submit(EngineRequest params) {
  const int64_t prompt_length = int64_t(params.prompt.size());
  require(prompt_length >= 1, ErrorKind::Input, "a request needs at least one prompt token");
  require(params.max_new_tokens >= 1 && params.max_new_tokens <= kMaxRequestTokens, ErrorKind::Input,
          "maxNewTokens must be in [1, 2^30], got " + std::to_string(params.max_new_tokens));
  require(prompt_length <= kMaxRequestTokens - params.max_new_tokens, ErrorKind::Input,
          "prompt + maxNewTokens must be at most 2^30 tokens");
  for (int64_t i = 0; i < prompt_length; ++i) {
    const int32_t id = params.prompt[size_t(i)];
    require(id >= 0 && id < vocab_size_, ErrorKind::Input,
            "prompt token " + std::to_string(i) + " = " + std::to_string(id) + " is out of range [0, " +
                std::to_string(vocab_size_) + ")");
  }
  if (params.allowed_vocabulary == 0) params.allowed_vocabulary = vocab_size_;
  require(params.allowed_vocabulary >= 1 && params.allowed_vocabulary <= vocab_size_, ErrorKind::Input,
          "the allowed vocabulary must be in [1, " + std::to_string(vocab_size_) + "]");
  require(params.top_logprobs >= -1 && params.top_logprobs <= kMaxTopLogprobs, ErrorKind::Input,
          "logprobs must be in [0, " + std::to_string(kMaxTopLogprobs) + "]");
  validate_sampler_params(params.sampler);
  // The last new token is sampled, never fed back: prompt + maxNewTokens − 1 slots at most.
  scheduler_.check_fits(prompt_length + params.max_new_tokens - 1);

  auto request = std::make_unique<Request>(std::move(params));
  Sequence& sequence = request->sequence;
  sequence.prompt_length = prompt_length;
  sequence.tokens = std::move(request->params.prompt);
  uint64_t id;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    require(!stopping_, ErrorKind::State, "the engine is closed");
    id = next_id_++;
    sequence.id = id;
    submitted_.push_back(std::move(request));
  }
  wake_.notify_one();
  return id;
}

void Engine::cancel(uint64_t request) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    cancelled_.push_back(request);
  }
  wake_.notify_one();
}

void Engine::pause() {
  std::lock_guard<std::mutex> lock(mutex_);
  step_allowance_ = 0;
}

void Engine::resume(int64_t steps) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    step_allowance_ = steps < 0 ? -1 : steps;
  }
  wake_.notify_one();
}

EngineStats Engine::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  EngineStats stats = published_;
  stats.waiting += int64_t(submitted_.size());
  const auto now = std::chrono::steady_clock::now();
  if (!rate_window_.empty() && now - rate_window_.front().first <= kRateWindow) {
    const double seconds = std::chrono::duration<double>(now - rate_window_.front().first).count();
    const int64_t tokens = stats.generated_tokens - rate_window_.front().second;
    stats.tokens_per_second = seconds > 0 ? double(tokens) / seconds : 0;
  }
  return stats;
}

std::vector<StepRecord> Engine::take_step_log() {
  std::lock_guard<std::mutex> lock(mutex_);
  return std::exchange(step_log_, {});
}

void Engine::take_inbox(std::vector<EngineEvent>* events) {
  std::vector<std::unique_ptr<Request>> submitted;
  std::vector<uint64_t> cancelled;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    submitted.swap(submitted_);
    cancelled.swap(cancelled_);
  }
  for (auto& request : submitted) {
    Sequence* sequence = &request->sequence;
    requests_.emplace(sequence->id, std::move(request));
    scheduler_.add(sequence);
  }
  for (uint64_t id : cancelled) {
    if (requests_.count(id) == 0) continue;
    EngineEvent event;
    event.request = id;
    event.finish = FinishReason::Cancelled;
    events->push_back(std::move(event));
    finish(id);
  }
}

void Engine::finish(uint64_t id) {
  auto found = requests_.find(id);
  scheduler_.remove(&found->second->sequence);
  requests_.erase(found);
}

void Engine::sample_row(Request& request, size_t row) {
  EngineEvent& event = row_events_[row];
  event = EngineEvent{};
  event.request = request.sequence.id;
  try {
    const EngineRequest& params = request.params;
    const float* logits = logits_.data() + row * size_t(vocab_size_);
    const size_t first_candidate = row * size_t(kMaxRankedCandidates);
    const LogitsWanted& wanted = wanted_[row];
    // A ranked or drawn row's whole logits were never returned: its request needs only the candidates or the token.
    switch (returned_[row]) {
      case RowReturned::Drawn:
        event.token = drawn_tokens_[row];
        break;
      case RowReturned::Ranked:
        event.token = request.sampler.sample_candidates(candidate_ids_.data() + first_candidate, candidate_values_.data() + first_candidate,
                                                        wanted.candidates, params.allowed_vocabulary);
        break;
      case RowReturned::Whole:
        event.token = wanted.temperature > 0 ? request.sampler.sample_drawn(wanted.draw, logits, params.allowed_vocabulary)
                                             : request.sampler.sample(logits, params.allowed_vocabulary);
        break;
    }
    if (params.top_logprobs >= 0) {
      event.has_logprob = true;
      event.logprob = token_logprobs(logits, params.allowed_vocabulary, event.token, params.top_logprobs, &event.top);
    }
    if (params.return_logits) event.logits.assign(logits, logits + vocab_size_);
  } catch (const std::exception& e) {
    event = error_event(request.sequence.id, e);
  }
}

void Engine::emit_sampled(Request& request, size_t row, std::vector<EngineEvent>* events) {
  EngineEvent& event = row_events_[row];
  if (event.finish != FinishReason::Error) {
    const EngineRequest& params = request.params;
    request.sequence.tokens.push_back(event.token);
    ++request.generated;
    ++generated_tokens_;
    const auto& stops = params.stop_token_ids;
    if (std::find(stops.begin(), stops.end(), event.token) != stops.end()) event.finish = FinishReason::Stop;
    else if (request.generated >= params.max_new_tokens) event.finish = FinishReason::Length;
  }
  events->push_back(std::move(event));
}

void Engine::run_step(const StepPlan& plan, std::vector<EngineEvent>* events) {
  batch_.sequences.clear();
  batch_.token_ids.clear();
  batch_.positions.clear();
  batch_.valid.clear();
  batch_.output_rows.clear();
  output_requests_.clear();
  wanted_.clear();
  for (const ScheduledChunk& chunk : plan.chunks) {
    const Sequence& sequence = *chunk.sequence;
    StepSequence step;
    step.block_table = sequence.block_table.data();
    step.block_count = int64_t(sequence.block_table.size());
    step.start = chunk.start;
    step.count = chunk.count;
    step.rope_length = chunk.rope_length;
    batch_.sequences.push_back(step);
    for (int64_t i = 0; i < chunk.count; ++i) {
      batch_.token_ids.push_back(sequence.tokens[size_t(chunk.start + i)]);
      batch_.positions.push_back(int32_t(chunk.start + i));
      batch_.valid.push_back(1);
    }
    if (chunk.wants_logits) {
      batch_.output_rows.push_back(batch_.token_count() - 1);
      output_requests_.push_back(requests_.at(sequence.id).get());
      Request& request = *output_requests_.back();
      wanted_.push_back(request.wanted);
      if (request.wanted.temperature > 0) wanted_.back().draw = request.sampler.draw();
    }
  }
  if (config_.record_steps) {
    StepRecord record;
    for (const ScheduledChunk& chunk : plan.chunks) record.chunks.push_back({chunk.sequence->id, chunk.start, chunk.count});
    for (const Sequence* sequence : plan.preempted) record.preempted.push_back(sequence->id);
    std::lock_guard<std::mutex> lock(mutex_);
    step_log_.push_back(std::move(record));
  }

  ThreadPoolPin pin;  // per step, sampling included: setNumThreads takes effect at the next step, never under this one
  try {
    runner_->run_for_sampling(batch_, wanted_.data(),
                              LogitsOutput{logits_.data(), candidate_ids_.data(), candidate_values_.data(), drawn_tokens_.data(),
                                           returned_.data()});
  } catch (const std::exception& e) {
    // Every sequence of the failed step fails: its cache slots may be half written.
    for (const ScheduledChunk& chunk : plan.chunks) {
      events->push_back(error_event(chunk.sequence->id, e));
      finish(chunk.sequence->id);
    }
    return;
  }
  scheduler_.complete(plan);
  for (size_t row = 0; row < output_requests_.size(); ++row) {
    const RowReturned returned = returned_[row];
    ++(returned == RowReturned::Drawn ? drawn_token_rows_ : returned == RowReturned::Ranked ? ranked_logits_rows_ : whole_logits_rows_);
  }
  // A whole row's sampler takes an exp per id (half a millisecond at a 50k vocabulary), so the rows,
  // each touching only its own request, are sampled on the step's pool; their events follow in order.
  const size_t rows = output_requests_.size();
  if (row_events_.size() < rows) row_events_.resize(rows);
  current_thread_pool()->parallel_for(int64_t(rows), 1, [this](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) sample_row(*output_requests_[size_t(row)], size_t(row));
  });
  for (size_t row = 0; row < rows; ++row) {
    Request& request = *output_requests_[row];
    emit_sampled(request, row, events);
    if (events->back().finish != FinishReason::None) finish(request.sequence.id);
  }
}

void Engine::fail_all(const std::exception& failure, std::vector<EngineEvent>* events) {
  // Events already made stay: a request that finished in this round keeps its final event.
  for (auto& [id, request] : requests_) events->push_back(error_event(id, failure));
  scheduler_.reset();
  blocks_.reset();
  requests_.clear();
}

void Engine::publish_stats() {
  std::lock_guard<std::mutex> lock(mutex_);
  published_.waiting = scheduler_.waiting();
  published_.running = scheduler_.running();
  published_.blocks = blocks_.counts();
  published_.prefix_hit_tokens = scheduler_.prefix_hit_tokens();
  published_.preemptions = scheduler_.preemptions();
  published_.generated_tokens = generated_tokens_;
  published_.whole_logits_rows = whole_logits_rows_;
  published_.ranked_logits_rows = ranked_logits_rows_;
  published_.drawn_token_rows = drawn_token_rows_;
  // A sample every tenth of a second at most: the window stays small however fast steps run.
  const auto now = std::chrono::steady_clock::now();
  if (rate_window_.empty() || now - rate_window_.back().first >= kRateSampleInterval) rate_window_.emplace_back(now, generated_tokens_);
  while (rate_window_.size() > 1 && now - rate_window_.front().first > kRateWindow) rate_window_.pop_front();
}

void Engine::run() {
  for (;;) {
    bool may_step;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] {
        return stopping_ || !submitted_.empty() || !cancelled_.empty() || (step_allowance_ != 0 && !scheduler_.idle());
      });
      if (stopping_) break;
      may_step = step_allowance_ != 0;
    }
    std::vector<EngineEvent> events;
    StepPlan plan;
    try {
      take_inbox(&events);
      if (may_step) plan = scheduler_.schedule();
      publish_stats();  // stats() during a step show the step's sequences as running
      if (!plan.chunks.empty()) {
        run_step(plan, &events);
        std::lock_guard<std::mutex> lock(mutex_);
        ++published_.steps;
        if (step_allowance_ > 0) --step_allowance_;
      }
      publish_stats();
    } catch (const std::exception& e) {
      // Outside a step (bookkeeping out of memory): nothing the engine holds can be trusted to be
      // consistent, so every request fails rather than the process.
      fail_all(e, &events);
      plan = StepPlan();
    }
    if (!events.empty()) sink_(std::move(events));
    if (may_step && plan.chunks.empty()) {
      // Nothing could run (cannot happen with requests that fit): sleep until something changes.
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !submitted_.empty() || !cancelled_.empty(); });
      if (stopping_) break;
    }
  }
  // Dropped here, on the engine thread, without events: the caller settles what was pending.
  requests_.clear();
}

}  // namespace falcon
