#include "handlers/scheduler.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <ctime>
#include <map>
#include <system_error>

#include "core/event_reader.h"
#include "core/ids.h"
#include "core/json.h"
#include "core/pg.h"
#include "core/protocol.h"
#include "core/thread_name.h"
#include "handlers/lost_attempts.h"
#include "handlers/scheduling_rules.h"

namespace unidesk::handlers {

namespace {

using Millis = std::chrono::milliseconds;

/// "0,2" or "{0,2}" -> {0, 2}.
std::vector<int> ParseIntArray(const std::string& text) {
  std::vector<int> out;
  std::string digits;
  for (char c : text) {
    if (std::isdigit(static_cast<unsigned char>(c)) || c == '-') {
      digits += c;
    } else if (!digits.empty()) {
      out.push_back(std::stoi(digits));
      digits.clear();
    }
  }
  if (!digits.empty()) out.push_back(std::stoi(digits));
  return out;
}

std::string IntArray(const std::vector<int>& v, char open = '{', char close = '}') {
  std::string s(1, open);
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s + close;
}

/// One event on the task's stream, expecting the version the pass read: a task that moved on
/// since then is refused (version conflict), never decided twice.
core::AppendRequest Fenced(const QueuedTask& q, const std::string& type, std::string data) {
  core::NewEvent e;
  e.type = type;
  e.data_json = std::move(data);
  e.metadata = {"handler:scheduler", q.task.id, "", Scheduler::Source()};
  return {"task-" + q.task.id, core::ExpectedVersion::Exactly(q.version), {e}, std::nullopt};
}

/// The event a landed append recorded, as the log will deliver it (for the queue at once).
core::RecordedEvent AsRecorded(const core::AppendRequest& r, std::int64_t version) {
  core::RecordedEvent e;
  e.stream_id = r.stream_id;
  e.stream_version = version;
  e.type = r.events.front().type;
  e.data_json = r.events.front().data_json;
  return e;
}

std::int64_t NowMillis() {
  return std::chrono::duration_cast<Millis>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

/// Now as RecordedEvent::recorded_at ("2026-11-22T08:00:00.123Z").
std::string NowRecordedAt() {
  std::int64_t ms = NowMillis();
  std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[40];
  std::size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof buf - n, ".%03dZ", static_cast<int>(ms % 1000));
  return buf;
}

/// Offered submissions kept at most while the scheduler cannot take them (the log has them).
constexpr std::size_t kMaxOffered = 10000;

using RepeatableRead =
    pqxx::transaction<pqxx::isolation_level::repeatable_read, pqxx::readwrite_policy::read_only>;

}  // namespace

/// The store's wake-up NOTIFY (libpqxx renews the LISTEN after a reconnect).
class Scheduler::Wakeup : public pqxx::notification_receiver {
 public:
  Wakeup(pqxx::connection& c, const std::string& channel) : notification_receiver(c, channel) {}
  void operator()(const std::string&, int) override {}
};

Scheduler::Scheduler(std::string conninfo, SchedulerSettings settings, core::EventStore& store,
                     core::LoggerPtr log)
    : conninfo_(std::move(conninfo)),
      settings_(settings),
      store_(store),
      log_(std::move(log)),
      wake_fd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
  if (wake_fd_ < 0) throw std::system_error(errno, std::generic_category(), "eventfd");
}

Scheduler::~Scheduler() {
  Stop();
  close(wake_fd_);
}

void Scheduler::Offer(const core::AppendRequest& request, const core::AppendOutcome& outcome) {
  if (request.events.size() != 1 || request.events.front().type != "task.submitted") return;
  if (stopping_) return;
  core::RecordedEvent e;
  e.position = outcome.first;
  e.tx_id = outcome.tx_id;
  e.stream_id = request.stream_id;
  e.stream_version = outcome.last_version;
  e.type = request.events.front().type;
  e.data_json = request.events.front().data_json;
  e.recorded_at = NowRecordedAt();
  {
    std::lock_guard<std::mutex> lock(offered_mu_);
    if (offered_.size() >= kMaxOffered) return;  // the log delivers it
    offered_.push_back(std::move(e));
  }
  std::uint64_t one = 1;
  (void)!write(wake_fd_, &one, sizeof one);
}

void Scheduler::TakeOffered() {
  std::vector<core::RecordedEvent> offered;
  {
    std::lock_guard<std::mutex> lock(offered_mu_);
    offered.swap(offered_);
  }
  for (const auto& e : offered) {
    // At or before the cursor: the log delivered it already (or the seed covered it).
    if (e.tx_id == 0 || !(cursor_ < e.cursor())) continue;
    queue_.ApplyAhead(e);
  }
}

void Scheduler::AwaitWake(long wait_us) {
  if (listen_->get_notifs() > 0) return;
  pollfd fds[2] = {{listen_->sock(), POLLIN, 0}, {wake_fd_, POLLIN, 0}};
  timespec timeout{wait_us / 1000000, (wait_us % 1000000) * 1000};
  if (ppoll(fds, 2, &timeout, nullptr) > 0 && (fds[1].revents & POLLIN)) {
    std::uint64_t n = 0;
    (void)!read(wake_fd_, &n, sizeof n);
  }
  listen_->get_notifs();
}

void Scheduler::Start() {
  thread_ = std::thread([this] {
    core::NameThisThread("ud-scheduler");
    Run();
  });
}

void Scheduler::Stop() {
  stopping_ = true;
  std::uint64_t one = 1;
  (void)!write(wake_fd_, &one, sizeof one);  // out of its wait at once
  if (thread_.joinable()) thread_.join();
}

void Scheduler::Connect() {
  if (!conn_) conn_ = core::Connect(conninfo_);
}

void Scheduler::Disconnect() {
  wakeup_.reset();
  listen_.reset();
  conn_.reset();
  // What happened while disconnected is read again from a fresh seed.
  seeded_ = false;
  queue_ = TaskQueue();
}

void Scheduler::Run() {
  bool failing = false;
  auto next_housekeeping = std::chrono::steady_clock::now();
  auto next_pass = next_housekeeping;
  while (!stopping_) {
    try {
      Connect();
      if (!listen_) {
        listen_ = core::Connect(conninfo_);
        wakeup_ = std::make_unique<Wakeup>(*listen_, "unidesk_events");
      }
      Follow();
      auto now = std::chrono::steady_clock::now();
      if (now >= next_housekeeping) {
        Housekeeping();
        next_housekeeping = now + settings_.sweep_interval;
      }
      // A change passes at once; waiting tasks are looked at again every interval.
      if (queue_.TakeChanged() || (now >= next_pass && queue_.size() > 0)) {
        PassOutcome o = Pass();
        next_pass = now + settings_.interval;
        if (o.placed || o.cancelled || o.conflicts) {
          log_->debug(
              "scheduler pass: {} placed, {} waiting changed, {} cancelled, {} skipped in {} ms",
              o.placed, o.waiting, o.cancelled, o.conflicts,
              std::chrono::duration_cast<Millis>(std::chrono::steady_clock::now() - now).count());
        }
      }
      if (failing) log_->info("scheduler: Postgres is back; passes resume");
      failing = false;
      // Held back: the events' NOTIFY came before an older transaction let them through.
      long wait_us = held_back_ ? 3000 : static_cast<long>(settings_.interval.count() * 1000);
      AwaitWake(wait_us);
    } catch (const std::exception& e) {
      if (!failing) log_->warn("scheduler: {}; retrying", e.what());
      failing = true;
      Disconnect();
      for (auto waited = Millis(0); waited < settings_.interval && !stopping_;
           waited += Millis(10)) {
        std::this_thread::sleep_for(Millis(10));
      }
    }
  }
  Disconnect();
}

const std::string& Scheduler::Source() {
  static const std::string source = "server/scheduler/" + std::to_string(getpid());
  return source;
}

PassOutcome Scheduler::Totals() const {
  std::lock_guard<std::mutex> lock(totals_mu_);
  return totals_;
}

PassOutcome Scheduler::PassOnce() {
  Connect();
  Follow();
  queue_.TakeChanged();
  return Pass();
}

void Scheduler::Seed() {
  RepeatableRead tx(*conn_);
  // The projection's rows and its checkpoint come from one snapshot: the queue as of that
  // cursor, and the log after it, miss nothing and count nothing twice.
  core::LogCursor at;
  auto cp = tx.exec("SELECT tx_id::text, position FROM subscriptions WHERE name = 'tasks'");
  if (!cp.empty()) at = {cp[0][0].as<std::uint64_t>(), cp[0][1].as<std::int64_t>()};
  TaskQueue queue;
  for (const auto& r :
       tx.exec("SELECT id::text, version, state, coalesce(spec::text, '{}'), submitted_position, "
               "  coalesce(waiting_reason, ''), attempt, "
               "  (extract(epoch FROM submitted_at) * 1000)::bigint, coalesce(cancel_reason, '') "
               "FROM tasks WHERE state IN ('queued', 'cancelling')")) {
    QueuedTask q;
    q.spec_json = r[3].c_str();
    q.task = SchedTaskFromSpec(r[0].c_str(), q.spec_json);
    q.task.submitted_position = r[4].as<std::int64_t>(0);
    q.task.waiting_reason = r[5].c_str();
    q.version = r[1].as<std::int64_t>();
    q.cancelling = std::string(r[2].c_str()) == "cancelling";
    q.attempt = r[6].as<int>(0);
    q.submitted_ms = r[7].as<std::int64_t>(0);
    q.cancel_reason = r[8].c_str();
    queue.Add(std::move(q));
  }
  queue_ = std::move(queue);
  cursor_ = at;
  seeded_ = true;
}

void Scheduler::Follow() {
  if (!seeded_) Seed();
  constexpr int kBatch = 2000;
  for (;;) {
    pqxx::nontransaction tx(*conn_);  // no transaction needed (event_reader.h)
    core::FollowBatch batch =
        core::ReadStreamsAfterCursor(tx, store_.catalogue(), cursor_, "task-", kBatch);
    for (const auto& e : batch.events) queue_.Apply(e);
    cursor_ = batch.next;
    held_back_ = batch.held_back;
    if (static_cast<int>(batch.events.size()) < kBatch) break;
  }
  TakeOffered();
  std::vector<std::string> unloaded = queue_.Unloaded();
  if (unloaded.empty()) return;
  std::vector<std::string> streams;
  for (const auto& id : unloaded) streams.push_back("task-" + id);
  pqxx::nontransaction tx(*conn_);
  for (const auto& r :
       tx.exec_params("SELECT substr(stream_id, 6), data->'spec', position, "
                      "  (extract(epoch FROM recorded_at) * 1000)::bigint "
                      "FROM events WHERE stream_id = ANY($1::text[]) AND stream_version = 0",
                      core::PgArrayLiteral(streams))) {
    queue_.Load(r[0].c_str(), r[1].is_null() ? "{}" : r[1].c_str(), r[2].as<std::int64_t>(),
                r[3].as<std::int64_t>());
  }
}

void Scheduler::Housekeeping() {
  SweepLostAttempts(*conn_, store_, settings_.accept_timeout, log_);
  // A backstop: the writer ending an attempt releases its placement in the same transaction.
  pqxx::work tx(*conn_);
  tx.exec(
      "DELETE FROM scheduler_placements p USING tasks t WHERE t.id = p.task_id AND "
      "t.state IN ('cancelled', 'succeeded', 'failed', 'timed_out', 'lost') "
      "AND t.attempt = p.attempt");
  tx.commit();
}

PassOutcome Scheduler::Pass() {
  PassOutcome out;
  std::vector<const QueuedTask*> head = queue_.Head(settings_.max_tasks_per_pass);
  if (head.empty()) return out;
  pqxx::work tx(*conn_);
  // Passes take turns; the lock is released at commit, after this pass's rows are visible. The
  // fleet and the capacity in use are read in the same round trip (a pipeline): each statement
  // still takes its snapshot when it starts, after the lock is held, so it sees what the
  // previous pass committed.
  pqxx::pipeline reads(tx);
  reads.retain(3);
  auto lock = reads.insert("SELECT pg_advisory_xact_lock(" +
                           std::to_string(core::LockKey("scheduler", "pass")) + ")");
  auto fleet = reads.insert(
      "SELECT name, status, coalesce(labels::text, '{}'), coalesce(resources::text, '{}'), "
      "coalesce(health->>'docker_ok', 'false'), coalesce(health->>'gpus_ok', 'true') FROM nodes");
  // One scan: the GPU indices in use come as "0,1,,3" (ParseIntArray skips the gaps).
  auto used = reads.insert(
      "SELECT node, sum(cpu_millis), sum(memory_bytes), "
      "string_agg(array_to_string(gpu_indices, ','), ',') FROM scheduler_placements GROUP BY node");
  reads.complete();
  reads.retrieve(lock);  // in order: an error surfaces as itself
  pqxx::result fleet_rows = reads.retrieve(fleet);
  pqxx::result used_rows = reads.retrieve(used);

  // Queued tasks whose cancel was requested end here; the rest are scheduled.
  std::vector<core::AppendRequest> requests;
  enum class Kind { kAssigned, kWaiting, kCancelled };
  struct Pending {
    Kind kind;
    const QueuedTask* row;
    Placement placement;
  };
  std::vector<Pending> pending;
  std::map<std::string, const QueuedTask*> by_id;
  std::vector<SchedTask> to_place;
  for (const QueuedTask* q : head) {
    by_id[q->task.id] = q;
    if (q->cancelling) {
      requests.push_back(
          Fenced(*q, "task.cancelled",
                 core::JsonObject()
                     .Str("task", q->task.id)
                     .Int("attempt", q->attempt)
                     .Str("reason", q->cancel_reason.empty() ? "cancelled before it was placed"
                                                             : q->cancel_reason)
                     .Done()));
      pending.push_back({Kind::kCancelled, q, {}});
    } else {
      to_place.push_back(q->task);
    }
  }

  if (!to_place.empty()) {
    std::vector<SchedNode> nodes;
    std::map<std::string, std::size_t> node_at;
    for (const auto& r : fleet_rows) {
      SchedNode n;
      n.name = r[0].c_str();
      n.status = r[1].c_str();
      n.labels = LabelsFromJson(r[2].c_str());
      auto res = core::protocol::ParseResources(r[3].c_str());
      if (res.ok()) {
        n.cpu_millis = static_cast<std::int64_t>(res.value().cpu_cores) * 1000;
        n.memory_bytes = res.value().memory_bytes;
        for (const auto& g : res.value().gpus) n.gpu_indices.push_back(g.index);
      }
      n.docker_ok = std::string(r[4].c_str()) == "true";
      n.gpus_ok = std::string(r[5].c_str()) == "true";
      node_at[n.name] = nodes.size();
      nodes.push_back(std::move(n));
    }
    for (const auto& r : used_rows) {
      auto it = node_at.find(r[0].c_str());
      if (it == node_at.end()) continue;
      SchedNode& n = nodes[it->second];
      n.used_cpu_millis = r[1].as<std::int64_t>();
      n.used_memory_bytes = r[2].as<std::int64_t>();
      n.used_gpu_indices = ParseIntArray(r[3].is_null() ? "" : r[3].c_str());
    }
    SchedulePlan plan = Schedule(to_place, nodes);
    std::int64_t now_ms = NowMillis();
    for (const Placement& p : plan.placements) {
      const QueuedTask& q = *by_id.at(p.task_id);
      requests.push_back(Fenced(
          q, "task.assigned",
          core::JsonObject()
              .Str("task", q.task.id)
              .Int("attempt", q.attempt + 1)
              .Str("node", p.node)
              .Raw("resources", core::JsonObject()
                                    .Num("cpu", static_cast<double>(q.task.cpu_millis) / 1000.0)
                                    .Int("memory_mb", q.task.memory_bytes >> 20)
                                    .Int("gpus", q.task.gpus)
                                    .Done())
              .Raw("gpu_indices", IntArray(p.gpu_indices, '[', ']'))
              .Int("queued_ms", std::max<std::int64_t>(0, now_ms - q.submitted_ms))
              .Done()));
      pending.push_back({Kind::kAssigned, &q, p});
    }
    for (const Wait& w : plan.waiting) {
      const QueuedTask& q = *by_id.at(w.task_id);
      if (q.task.waiting_reason == w.reason) continue;  // recorded already
      requests.push_back(
          Fenced(q, "task.waiting",
                 core::JsonObject().Str("task", q.task.id).Str("reason", w.reason).Done()));
      pending.push_back({Kind::kWaiting, &q, {}});
    }
  }

  // Appends first (their xid orders delivery), then the placement rows of those that landed.
  std::vector<core::AppendResult> results;
  if (!requests.empty()) results = store_.AppendAllInTransaction(tx, requests);
  std::vector<std::string> ids, nodes, gpus, attempts, cpus, memories;
  std::vector<core::RecordedEvent> landed;
  std::vector<CommittedPlacement> placed;
  for (std::size_t i = 0; i < results.size(); ++i) {
    const Pending& p = pending[i];
    if (!results[i].ok()) {
      if (results[i].error().code != core::AppendError::kVersionConflict) {
        throw std::runtime_error(std::string("scheduler append failed: ") +
                                 core::AppendErrorName(results[i].error().code) + ": " +
                                 results[i].error().message);
      }
      ++out.conflicts;
      continue;
    }
    landed.push_back(AsRecorded(requests[i], results[i].value().last_version));
    switch (p.kind) {
      case Kind::kAssigned:
        ids.push_back(p.row->task.id);
        attempts.push_back(std::to_string(p.row->attempt + 1));
        nodes.push_back(p.placement.node);
        cpus.push_back(std::to_string(p.row->task.cpu_millis));
        memories.push_back(std::to_string(p.row->task.memory_bytes));
        gpus.push_back(IntArray(p.placement.gpu_indices, '[', ']'));
        placed.push_back(
            {p.row->task.id, p.row->attempt + 1, p.placement.node, gpus.back(), p.row->spec_json});
        ++out.placed;
        break;
      case Kind::kWaiting:
        ++out.waiting;
        break;
      case Kind::kCancelled:
        ++out.cancelled;
        break;
    }
  }
  if (!ids.empty()) {
    // One statement for every placement of the pass.
    tx.exec_params(
        "INSERT INTO scheduler_placements (task_id, attempt, node, cpu_millis, memory_bytes, "
        "gpu_indices) SELECT t::uuid, a, n, c, m, "
        "  ARRAY(SELECT jsonb_array_elements_text(g::jsonb)::int) "
        "FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[], "
        "  $6::text[]) AS x(t, a, n, c, m, g)",
        core::PgArrayLiteral(ids), core::PgArrayLiteral(attempts), core::PgArrayLiteral(nodes),
        core::PgArrayLiteral(cpus), core::PgArrayLiteral(memories), core::PgArrayLiteral(gpus));
  }
  tx.commit();
  if (!requests.empty()) store_.NotifyCommitted();
  {
    std::lock_guard<std::mutex> lock(totals_mu_);
    totals_.placed += out.placed;
    totals_.waiting += out.waiting;
    totals_.cancelled += out.cancelled;
    totals_.conflicts += out.conflicts;
  }
  // The queue learns its own decisions now; the log delivers them again later (ignored).
  for (const auto& e : landed) queue_.ApplyAhead(e);
  if (on_committed_ && !placed.empty()) {
    try {
      on_committed_(placed);
    } catch (const std::exception& e) {
      // Nothing is lost: the bus delivers the same assignments.
      log_->warn("handing {} placements over in-process failed: {}", placed.size(), e.what());
    }
  }
  return out;
}

}  // namespace unidesk::handlers
