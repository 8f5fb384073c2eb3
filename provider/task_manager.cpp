#include "provider/task_manager.h"

#include <chrono>
#include <cstdint>

#include "core/json.h"
#include "core/task_spec.h"
#include "provider/docker_client.h"
#include "provider/git_cache.h"
#include "provider/host_hygiene.h"
#include "provider/utf8.h"

namespace unidesk::provider {

namespace proto = core::protocol;

namespace {

/// Output kept per attempt; past it one line says the rest was dropped. The log lives in the
/// event log, so a task printing without end must not fill the server's disk.
constexpr std::int64_t kMaxLogBytesPerAttempt = 64LL << 20;
constexpr auto kFlushEvery = std::chrono::milliseconds(250);

enum Stop : int { kRun = 0, kCancelled = 1, kLost = 2, kDetach = 3 };

/// What the attempt used and how long each step took, as far as `o` knows.
void CopyOutcome(const RunOutcome& o, proto::TaskReport& r) {
  r.image = o.image;
  r.code_fetched = o.code_fetched;
  r.env_fetched = o.env_fetched;
  r.image_built = o.image_built;
  r.git_ms = o.git_ms;
  r.build_ms = o.build_ms;
  r.run_ms = o.run_ms;
  r.prepare_ms = o.prepare_ms;
}

}  // namespace

struct TaskManager::Attempt {
  std::atomic<int> stop{kRun};
  std::mutex mu;  // everything below but `rec.assign`, which never changes
  // The assignment, the container once it runs, the output's numbering and position: what the
  // attempt record keeps (`rec.cursor` is just past the output in `raw`, `text` and the outbox).
  AttemptRecord rec;
  std::string stop_reason;
  std::string phase;
  std::string stream = "stdout";  // of `raw` and `text`
  std::string raw;                // bytes not yet known to be whole UTF-8 sequences
  std::string text;               // valid UTF-8 waiting to be reported
  std::string saved;              // the record as last written
  bool resumed = false;           // an earlier agent process started the container
  std::thread thread;
};

TaskManager::TaskManager(RunnerSettings runner, Emit emit, core::LoggerPtr log)
    : runner_(std::move(runner)),
      emit_(std::move(emit)),
      log_(std::move(log)),
      records_(runner_.data_dir + "/attempts") {
  runner_.remove_ended_container = false;  // removed in Work, once the ending is in the outbox
  flusher_ = std::thread([this] { Flusher(); });
}

TaskManager::~TaskManager() { Shutdown("the agent stopped"); }

void TaskManager::MarkEnded(const std::string& task, std::int64_t attempt) {
  std::lock_guard<std::mutex> lock(mu_);
  ended_.insert({task, attempt});
}

void TaskManager::Adopt() {
  auto loaded = records_.LoadAll();
  for (const auto& bad : loaded.unreadable) log_->warn("attempt record {} (removed)", bad);
  for (auto& r : loaded.records) {
    Key key{r.assign.task, r.assign.attempt};
    std::lock_guard<std::mutex> lock(mu_);
    if (ended_.count(key)) {  // its ending waits in the outbox
      records_.Remove(key.first, key.second);
      continue;
    }
    if (shutting_down_ || running_.count(key)) continue;
    auto a = std::make_shared<Attempt>();
    a->rec = r;
    a->resumed = true;
    a->phase = "running";
    running_[key] = a;
    log_->info("task {} attempt {}: following its container {} again", key.first, key.second,
               r.container.substr(0, 12));
    a->thread = std::thread([this, a] { Work(a); });
  }
}

void TaskManager::Assign(const proto::Assign& a) {
  Key key{a.task, a.attempt};
  std::lock_guard<std::mutex> lock(mu_);
  if (shutting_down_ || running_.count(key) || ended_.count(key)) return;  // idempotent
  auto attempt = std::make_shared<Attempt>();
  attempt->rec.assign = a;
  running_[key] = attempt;
  log_->info("task {} attempt {}: assigned", a.task, a.attempt);
  attempt->thread = std::thread([this, attempt] { Work(attempt); });
}

void TaskManager::Cancel(const proto::Cancel& c) {
  std::shared_ptr<Attempt> a;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = running_.find({c.task, c.attempt});
    if (it == running_.end()) return;
    a = it->second;
  }
  bool server_dropped = c.reason == "the server no longer runs this attempt";
  {
    std::lock_guard<std::mutex> lock(a->mu);
    a->stop_reason = c.reason.empty() ? "cancelled" : c.reason;
  }
  a->stop = server_dropped ? kLost : kCancelled;
  log_->info("task {} attempt {}: stopping ({})", c.task, c.attempt, c.reason);
}

std::string TaskManager::RunningJson() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out = "[";
  for (const auto& [key, a] : running_) {
    if (out.size() > 1) out += ",";
    out += core::JsonObject().Str("task", key.first).Int("attempt", key.second).Done();
  }
  return out + "]";
}

std::set<std::string> TaskManager::InUse() const {
  std::set<std::string> keys;
  GitCache git(runner_.data_dir);
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [key, a] : running_) {
    using Kind = CacheItem::Kind;
    keys.insert(InUseKey(Kind::kWorkspace, key.first + "-" + std::to_string(key.second)));
    core::JsonReader spec(a->rec.assign.spec_json);
    auto code = spec.Str("code_repo_url").value_or("");
    auto env = spec.Str("env_repo_url").value_or("");
    keys.insert(InUseKey(Kind::kMirror, git.MirrorPath(code)));
    keys.insert(InUseKey(Kind::kMirror, git.MirrorPath(env)));
    keys.insert(InUseKey(Kind::kImage, EnvImageTag(env, spec.Str("env_commit_id").value_or(""),
                                                   spec.Str("dockerfile_path").value_or(""))));
  }
  return keys;
}

void TaskManager::ReapOrphans() {
  {
    // A stopping agent may leave containers running for the next process (keep-running).
    std::lock_guard<std::mutex> lock(mu_);
    if (shutting_down_) return;
  }
  DockerClient docker(runner_.docker_socket);
  auto found = docker.ListLabelled("unidesk.node=" + runner_.node);
  if (!found.ok()) {
    log_->warn("cannot look for containers left by an earlier agent: {}", found.error().message);
    return;
  }
  for (const auto& c : found.value()) {
    std::string task = c.labels.count("unidesk.task") ? c.labels.at("unidesk.task") : "";
    std::int64_t attempt = 0;
    try {
      attempt =
          std::stoll(c.labels.count("unidesk.attempt") ? c.labels.at("unidesk.attempt") : "0");
    } catch (const std::exception&) {
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (running_.count({task, attempt})) continue;
    }
    bool ended;
    {
      std::lock_guard<std::mutex> lock(mu_);
      ended = ended_.count({task, attempt}) > 0;
    }
    auto removed = docker.Remove(c.id);
    log_->warn("removed container {} of task {} attempt {}, which no attempt of this agent runs{}",
               c.id.substr(0, 12), task, attempt,
               removed.ok() ? "" : " (removal failed: " + removed.error().message + ")");
    // An attempt that ended here already said so; only one nobody reported is lost.
    if (task.empty() || attempt <= 0 || ended) continue;
    MarkEnded(task, attempt);
    proto::TaskReport r;
    r.task = task;
    r.attempt = attempt;
    r.state = "lost";
    r.failure = "lost";
    r.reason = "the agent restarted while the attempt ran; its container was removed";
    Report(r);
  }
}

void TaskManager::Shutdown(const std::string& reason, bool keep_running) {
  std::vector<std::shared_ptr<Attempt>> attempts;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shutting_down_) return;
    shutting_down_ = true;
    for (auto& [key, a] : running_) attempts.push_back(a);
  }
  for (auto& a : attempts) {
    {
      std::lock_guard<std::mutex> lock(a->mu);
      a->stop_reason = reason;
    }
    int run = kRun;  // a cancel that came first stays a cancel
    a->stop.compare_exchange_strong(run, keep_running ? kDetach : kLost);
  }
  cv_.notify_all();
  if (flusher_.joinable()) flusher_.join();
  for (auto& a : attempts) {
    if (a->thread.joinable()) a->thread.join();
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& t : finished_threads_) {
    if (t.joinable()) t.join();
  }
  finished_threads_.clear();
}

void TaskManager::Report(const proto::TaskReport& r) { emit_("task", proto::ToJson(r)); }

void TaskManager::FlushLogs(Attempt& a) {
  // Called with a.mu held.
  while (!a.text.empty()) {
    std::size_t n = Utf8Cut(a.text, proto::kMaxLogChunkBytes);
    if (n == 0) n = a.text.size();  // cannot happen with valid UTF-8; never loop forever
    proto::LogChunk c{a.rec.assign.task, a.rec.assign.attempt, ++a.rec.log_seq, a.stream,
                      a.text.substr(0, n)};
    a.text.erase(0, n);
    emit_("log", proto::ToJson(c));
  }
}

void TaskManager::SaveRecord(Attempt& a) {
  // Called with a.mu held, when everything before `a.cursor` is in the outbox: a restart then
  // reports nothing twice and skips nothing (a crash between the two writes repeats a chunk).
  std::string json = ToJson(a.rec);
  if (json == a.saved) return;
  if (records_.Save(a.rec)) {
    a.saved = std::move(json);
  } else {
    log_->warn(
        "task {} attempt {}: cannot write its attempt record; a restart of the agent "
        "would lose it",
        a.rec.assign.task, a.rec.assign.attempt);
  }
}

void TaskManager::Work(std::shared_ptr<Attempt> a) {
  const proto::Assign& as = a->rec.assign;
  proto::TaskReport base;
  base.task = as.task;
  base.attempt = as.attempt;
  if (!a->resumed) {
    proto::TaskReport accepted = base;
    accepted.state = "accepted";
    Report(accepted);
  }

  // Called with a->mu held.
  auto append_log = [&](const std::string& stream, std::string_view bytes) {
    if (a->rec.log_truncated) return;
    if (stream != a->stream) {
      a->text += TakeUtf8(a->raw, true);
      FlushLogs(*a);
      a->stream = stream;
    }
    if (a->rec.log_bytes + static_cast<std::int64_t>(bytes.size()) > kMaxLogBytesPerAttempt) {
      a->rec.log_truncated = true;
      a->text += TakeUtf8(a->raw, true);
      a->text += "\n[unidesk] output past 64 MiB is not kept\n";
      FlushLogs(*a);
      return;
    }
    a->rec.log_bytes += static_cast<std::int64_t>(bytes.size());
    a->raw.append(bytes.data(), bytes.size());
    a->text += TakeUtf8(a->raw, false);
    if (a->text.size() >= proto::kMaxLogChunkBytes) FlushLogs(*a);
  };

  RunOutcome o;
  core::TaskLimits any;  // the server validated the spec against its own limits
  any.allow_file_urls = true;
  any.max_cpu_millis = INT64_MAX / 2;
  any.max_memory_bytes = INT64_MAX / 2;
  any.max_gpus = 1 << 20;
  any.max_timeout_s = INT64_MAX / 2000;
  any.max_attempts = 1 << 20;
  auto spec = core::ParseTaskSpec(as.spec_json, any);
  if (!spec.ok()) {
    o.state = "failed";
    o.failure = FailureClass::kRuntime;
    o.reason = "the assignment's spec is not readable here (" + spec.error().field + ": " +
               spec.error().message + "); is the agent older than the server?";
  } else {
    RunnerHooks hooks;
    hooks.on_phase = [&](const std::string& phase, const RunOutcome& so_far) {
      {
        std::lock_guard<std::mutex> lock(a->mu);
        a->phase = phase;
      }
      proto::TaskReport r = base;
      if (phase == "running") {
        r.state = "running";
        CopyOutcome(so_far, r);
      } else {
        r.state = "preparing";
        r.phase = phase;
      }
      Report(r);
    };
    hooks.on_log = [&](bool is_stderr, std::string_view text) {
      std::string phase;
      {
        std::lock_guard<std::mutex> lock(a->mu);
        phase = a->phase;
      }
      // The preparation's output (git's progress, the env build) is not the task's stdout.
      bool preparing = phase == "git" || phase == "build";
      std::lock_guard<std::mutex> lock(a->mu);
      append_log(is_stderr ? "stderr" : preparing ? "build" : "stdout", text);
    };
    hooks.on_output = [&](bool is_stderr, const LogCursor& after, std::string_view text) {
      std::lock_guard<std::mutex> lock(a->mu);
      append_log(is_stderr ? "stderr" : "stdout", text);
      a->rec.cursor = after;
    };
    hooks.on_started = [&](const std::string& container, std::int64_t started_unix_ms) {
      std::lock_guard<std::mutex> lock(a->mu);
      a->rec.container = container;
      a->rec.started_unix_ms = started_unix_ms;
      SaveRecord(*a);
    };
    hooks.cancelled = [&] { return a->stop != kRun; };
    hooks.detach = [&] { return a->stop == kDetach; };
    Assignment assignment{as.task, static_cast<int>(as.attempt), spec.value(), as.gpu_indices};
    if (a->resumed) {
      Reattach at;
      {
        std::lock_guard<std::mutex> lock(a->mu);
        at = {a->rec.container, a->rec.started_unix_ms, a->rec.cursor};
      }
      o = TaskRunner(runner_).Resume(assignment, at, hooks);
    } else {
      o = TaskRunner(runner_).Run(assignment, hooks);
    }
  }
  Key key{as.task, as.attempt};
  if (o.state == "detached") {
    {
      std::lock_guard<std::mutex> lock(a->mu);
      a->text += TakeUtf8(a->raw, true);
      FlushLogs(*a);
      SaveRecord(*a);
    }
    log_->info("task {} attempt {}: its container {} runs on for the next agent process", as.task,
               as.attempt, a->rec.container.substr(0, 12));
    std::lock_guard<std::mutex> lock(mu_);
    running_.erase(key);
    return;  // Shutdown joins the thread
  }
  {
    std::lock_guard<std::mutex> lock(a->mu);
    a->text += TakeUtf8(a->raw, true);
    FlushLogs(*a);
  }
  proto::TaskReport end = base;
  end.state = o.state;
  end.failure = FailureClassName(o.failure);
  end.reason = o.reason;
  end.exit_code = o.exit_code;
  CopyOutcome(o, end);
  if ((a->stop == kLost || a->stop == kDetach) && o.failure == FailureClass::kCancelled) {
    // Stopped because the agent is stopping or the server moved on: not the task's doing.
    std::lock_guard<std::mutex> lock(a->mu);
    end.state = "lost";
    end.failure = "lost";
    end.reason = a->stop_reason;
  }
  Report(end);
  records_.Remove(as.task, as.attempt);  // after the ending is in the outbox
  if (!o.container.empty()) {
    // Last: an agent killed before this still finds the ended container and reads its ending.
    auto removed = DockerClient(runner_.docker_socket).Remove(o.container);
    if (!removed.ok()) {
      log_->warn("task {} attempt {}: container {} left behind ({}); the reaper retries", as.task,
                 as.attempt, o.container.substr(0, 12), removed.error().message);
    }
  }
  log_->info("task {} attempt {}: {}{}", as.task, as.attempt, end.state,
             end.reason.empty() ? "" : " (" + end.reason + ")");
  std::lock_guard<std::mutex> lock(mu_);
  ended_.insert(key);
  running_.erase(key);
  if (!shutting_down_) {
    finished_threads_.push_back(std::move(a->thread));  // joined by the flusher
  }
}

void TaskManager::Flusher() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!shutting_down_) {
    cv_.wait_for(lock, kFlushEvery);
    std::vector<std::shared_ptr<Attempt>> attempts;
    for (auto& [key, a] : running_) attempts.push_back(a);
    std::vector<std::thread> done;
    done.swap(finished_threads_);
    lock.unlock();
    for (auto& t : done) {
      if (t.joinable()) t.join();
    }
    for (auto& a : attempts) {
      std::lock_guard<std::mutex> alock(a->mu);
      FlushLogs(*a);
      // A partial UTF-8 sequence waiting in `raw` is past the cursor's entry: wait for it.
      if (!a->rec.container.empty() && a->raw.empty()) SaveRecord(*a);
    }
    lock.lock();
  }
}

}  // namespace unidesk::provider
