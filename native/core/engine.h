#pragma once
// The continuous-batching engine: one thread that runs steps back to back while requests exist, over
// a StepRunner (a model on a backend, or a fake in tests). Callers submit and cancel from any thread
// and never wait on a step; what a step produces goes out through the event sink, once per step.
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "block_manager.h"
#include "sampler.h"
#include "scheduler.h"
#include "step_runner.h"

namespace falcon {

// OpenAI's bound on top logprobs.
constexpr int64_t kMaxTopLogprobs = 20;

struct EngineConfig {
  int64_t max_batch_tokens = 512;
  int64_t max_sequences = 64;
  bool prefix_caching = true;
  // Dynamic NTK rotary (see SchedulerConfig); also turns prefix caching off, since a cached key's
  // rotation would depend on the length of the sequence that computed it.
  bool length_dependent_rotary = false;
  // Keep a log of every step's chunks (take_step_log), for tests of the policy.
  bool record_steps = false;
};

struct EngineRequest {
  TrackedVector<int32_t> prompt;  // moved into the sequence on submit
  int64_t max_new_tokens = 1;
  std::vector<int32_t> stop_token_ids;
  int64_t allowed_vocabulary = 0;  // tokens at or above it are never sampled; 0 = the whole vocabulary
  SamplerParams sampler;
  int64_t top_logprobs = -1;  // -1: no logprobs; else the chosen token's and the `top_logprobs` best
  bool return_logits = false;
};

enum class FinishReason : uint8_t { None, Stop, Length, Cancelled, Error };
const char* finish_reason_name(FinishReason reason);
struct EngineEvent;
// The Error event of a request that `failure` (an Error, std::bad_alloc or other exception) ended.
EngineEvent error_event(uint64_t request, const std::exception& failure);

struct EngineEvent {
  uint64_t request = 0;
  int32_t token = -1;  // -1: the event carries no token (cancelled, error)
  FinishReason finish = FinishReason::None;
  bool has_logprob = false;
  float logprob = 0.0f;
  std::vector<TokenLogprob> top;
  TrackedVector<float> logits;  // the token's logits row, when the request asked for it
  ErrorKind error_kind = ErrorKind::State;
  std::string error;
};

// Called on the engine thread with the events of one step (never empty); must not block.
using EventSink = std::function<void(std::vector<EngineEvent>&&)>;

struct EngineStats {
  int64_t waiting = 0;
  int64_t running = 0;
  BlockCounts blocks;
  int64_t prefix_hit_tokens = 0;
  int64_t preemptions = 0;  // running sequences sent back to wait (their tokens recomputed later)
  int64_t generated_tokens = 0;
  double tokens_per_second = 0;  // over the last few seconds
  int64_t steps = 0;
  // Output rows the runner returned as whole logits rows (on CUDA: copied back from the device), and
  // rows it returned as their best candidates only, and rows it returned as their token only (ranked
  // or drawn on the device; the CPU does neither).
  int64_t whole_logits_rows = 0;
  int64_t ranked_logits_rows = 0;
  int64_t drawn_token_rows = 0;
};

struct StepRecordChunk {
  uint64_t request = 0;
  int64_t start = 0;
  int64_t count = 0;
};
struct StepRecord {
  std::vector<StepRecordChunk> chunks;
  std::vector<uint64_t> preempted;
};

class Engine {
 public:
  Engine(std::unique_ptr<StepRunner> runner, const EngineConfig& config, EventSink sink);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Validates and queues a request; returns its id. Throws Error(Input) for a request that is
  // malformed or could never fit the pool, Error(State) once the engine is shut down.
  uint64_t submit(EngineRequest request);
  // Takes effect before the next step: the request's blocks are released and a Cancelled event sent.
  // Unknown or finished ids are ignored.
  void cancel(uint64_t request);
  // Stops the thread (waiting for the step in progress) and drops every request without events.
  // Idempotent; safe from any thread but the engine's.
  void shutdown();

  // Holds the engine between steps: no step starts until resume(); submissions and cancellations are
  // still taken in (a cancelled request's blocks are freed at once). resume(n) runs n more steps, then
  // holds again; resume() runs freely. For tests that need a step's composition or a pool's state
  // without racing the engine thread, and for callers that drain.
  void pause();
  void resume(int64_t steps = -1);

  EngineStats stats() const;
  std::vector<StepRecord> take_step_log();
  int64_t vocab_size() const { return vocab_size_; }
  int64_t num_blocks() const { return num_blocks_; }

 private:
  struct Request {
    Sequence sequence;
    EngineRequest params;
    SequenceSampler sampler;
    // What the sampler (and logprobs, returned logits) needs of each logits row.
    LogitsWanted wanted;
    int64_t generated = 0;
    Request(EngineRequest p);
  };

  void run();
  // Moves submitted and cancelled requests into the scheduler; appends Cancelled events.
  void take_inbox(std::vector<EngineEvent>* events);
  void run_step(const StepPlan& plan, std::vector<EngineEvent>* events);
  // Samples output row `row` of the step just run (whole, ranked or drawn) into row_events_[row]: the
  // token's event, or the request's Error event. Touches that row's request and event only, so rows
  // are sampled in parallel.
  void sample_row(Request& request, size_t row);
  // Records row_events_[row]'s token in its request (and its finish) and appends the event.
  void emit_sampled(Request& request, size_t row, std::vector<EngineEvent>* events);
  void finish(uint64_t id);
  // Fails every request (an Error event each, after the events already in `events`) and empties the
  // pool and the queues.
  void fail_all(const std::exception& failure, std::vector<EngineEvent>* events);
  void publish_stats();

  std::unique_ptr<StepRunner> runner_;
  const EngineConfig config_;
  EventSink sink_;
  const int64_t vocab_size_;
  const int64_t num_blocks_;

  // Engine thread only.
  BlockManager blocks_;
  Scheduler scheduler_;
  std::map<uint64_t, std::unique_ptr<Request>> requests_;
  StepBatch batch_;
  std::vector<Request*> output_requests_;  // the request of each of batch_'s output rows
  std::vector<EngineEvent> row_events_;     // each output row's event, as sampled (grown, then reused)
  // The step's output rows, as the runner returned each (backend.h LogitsOutput), and what each wants.
  std::vector<LogitsWanted> wanted_;
  TrackedVector<float> logits_;
  TrackedVector<int32_t> candidate_ids_;
  TrackedVector<float> candidate_values_;
  TrackedVector<int32_t> drawn_tokens_;
  TrackedVector<RowReturned> returned_;
  int64_t generated_tokens_ = 0;
  int64_t whole_logits_rows_ = 0;
  int64_t ranked_logits_rows_ = 0;
  int64_t drawn_token_rows_ = 0;

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  int64_t step_allowance_ = -1;  // steps that may still start; -1 = no limit
  uint64_t next_id_ = 1;
  std::vector<std::unique_ptr<Request>> submitted_;
  std::vector<uint64_t> cancelled_;
  EngineStats published_;
  std::deque<std::pair<std::chrono::steady_clock::time_point, int64_t>> rate_window_;
  std::vector<StepRecord> step_log_;

  std::thread thread_;
};

}  // namespace falcon
