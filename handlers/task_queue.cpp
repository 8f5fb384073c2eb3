#include "handlers/task_queue.h"

#include <rapidjson/document.h>

#include <algorithm>
#include <cmath>
#include <ctime>

#include "core/json.h"

namespace unidesk::handlers {

namespace {

bool EndsAttempt(const std::string& type) {
  return type == "task.succeeded" || type == "task.failed" || type == "task.timed_out" ||
         type == "task.lost" || type == "task.cancelled";
}

}  // namespace

namespace {

std::map<std::string, std::string> Labels(const rapidjson::Value& v) {
  std::map<std::string, std::string> out;
  if (!v.IsObject()) return out;
  for (auto m = v.MemberBegin(); m != v.MemberEnd(); ++m) {
    if (m->value.IsString()) out[m->name.GetString()] = m->value.GetString();
  }
  return out;
}

}  // namespace

std::map<std::string, std::string> LabelsFromJson(const std::string& json) {
  rapidjson::Document d;
  d.Parse(json.c_str());
  return Labels(d);
}

SchedTask SchedTaskFromSpec(const std::string& id, const std::string& spec_json) {
  SchedTask t;
  t.id = id;
  rapidjson::Document d;
  d.Parse(spec_json.c_str());
  if (!d.IsObject()) return t;
  if (auto p = d.FindMember("priority"); p != d.MemberEnd() && p->value.IsInt()) {
    t.priority = p->value.GetInt();
  }
  if (auto r = d.FindMember("resources"); r != d.MemberEnd() && r->value.IsObject()) {
    const auto& res = r->value;
    // cpu is a number of cores with up to three decimals; the scheduler counts millis.
    if (auto c = res.FindMember("cpu"); c != res.MemberEnd() && c->value.IsNumber()) {
      t.cpu_millis = std::llround(c->value.GetDouble() * 1000.0);
    }
    if (auto m = res.FindMember("memory_mb"); m != res.MemberEnd() && m->value.IsInt64()) {
      t.memory_bytes = m->value.GetInt64() << 20;
    }
    if (auto g = res.FindMember("gpus"); g != res.MemberEnd() && g->value.IsInt()) {
      t.gpus = g->value.GetInt();
    }
  }
  if (auto l = d.FindMember("labels"); l != d.MemberEnd()) t.labels = Labels(l->value);
  return t;
}

std::int64_t EpochMillis(const std::string& recorded_at) {
  std::tm tm{};
  const char* rest = strptime(recorded_at.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
  if (rest == nullptr) return 0;
  std::int64_t ms = static_cast<std::int64_t>(timegm(&tm)) * 1000;
  if (*rest == '.') {
    int scale = 100;
    for (++rest; *rest >= '0' && *rest <= '9'; ++rest, scale /= 10) ms += (*rest - '0') * scale;
  }
  return ms;
}

void TaskQueue::Add(QueuedTask t) {
  std::string id = t.task.id;
  tasks_[id] = std::move(t);
  changed_ = true;
}

void TaskQueue::Apply(const core::RecordedEvent& e) { ApplyOne(e, false); }

void TaskQueue::ApplyAhead(const core::RecordedEvent& e) { ApplyOne(e, true); }

void TaskQueue::ApplyOne(const core::RecordedEvent& e, bool ahead) {
  if (e.stream_id.rfind("task-", 0) != 0) return;
  std::string id = e.stream_id.substr(5);
  if (EndsAttempt(e.type)) changed_ = true;  // capacity returned: a waiting task may fit now
  if (auto t = tombstones_.find(id); t != tombstones_.end()) {
    if (e.stream_version < t->second) return;  // from before the removal applied ahead
    if (!ahead) tombstones_.erase(t);          // the log has caught up with it
  }
  auto it = tasks_.find(id);
  if (it != tasks_.end() && e.stream_version <= it->second.version) return;  // seen already
  core::JsonReader data(e.data_json);
  if (e.type == "task.submitted") {
    QueuedTask q;
    q.spec_json = data.Raw("spec").value_or("{}");
    q.task = SchedTaskFromSpec(id, q.spec_json);
    q.task.submitted_position = e.position.value;
    q.version = e.stream_version;
    q.submitted_ms = EpochMillis(e.recorded_at);
    Add(std::move(q));
  } else if (e.type == "task.requeued") {
    if (it == tasks_.end()) {
      QueuedTask q;
      q.task.id = id;
      q.loaded = false;
      it = tasks_.emplace(id, std::move(q)).first;
    }
    it->second.version = e.stream_version;
    it->second.attempt = static_cast<int>(data.Int("attempt").value_or(0));
    it->second.cancelling = false;
    it->second.cancel_reason.clear();
    it->second.task.waiting_reason.clear();
    changed_ = true;
  } else if (it == tasks_.end()) {
    return;  // about a task that is placed or ended: not the queue's concern
  } else if (e.type == "task.assigned" || EndsAttempt(e.type)) {
    tasks_.erase(it);
    if (ahead) tombstones_[id] = e.stream_version;
  } else if (e.type == "task.waiting") {
    it->second.version = e.stream_version;
    it->second.task.waiting_reason = data.Str("reason").value_or("");
  } else if (e.type == "task.cancel_requested") {
    it->second.version = e.stream_version;
    if (data.Int("attempt").value_or(0) == 0) {
      it->second.cancelling = true;
      it->second.cancel_reason = data.Str("reason").value_or("");
      changed_ = true;
    }
  } else {
    it->second.version = e.stream_version;
  }
}

void TaskQueue::Load(const std::string& id, const std::string& spec_json,
                     std::int64_t submitted_position, std::int64_t submitted_ms) {
  auto it = tasks_.find(id);
  if (it == tasks_.end()) return;
  QueuedTask& q = it->second;
  std::string reason = q.task.waiting_reason;
  q.task = SchedTaskFromSpec(id, spec_json);
  q.spec_json = spec_json;
  q.task.submitted_position = submitted_position;
  q.task.waiting_reason = reason;
  q.submitted_ms = submitted_ms;
  q.loaded = true;
  changed_ = true;
}

std::vector<std::string> TaskQueue::Unloaded() const {
  std::vector<std::string> out;
  for (const auto& [id, q] : tasks_) {
    if (!q.loaded) out.push_back(id);
  }
  return out;
}

std::vector<const QueuedTask*> TaskQueue::Head(std::size_t limit) const {
  std::vector<const QueuedTask*> out;
  out.reserve(tasks_.size());
  for (const auto& [id, q] : tasks_) {
    if (q.loaded) out.push_back(&q);
  }
  auto before = [](const QueuedTask* a, const QueuedTask* b) {
    if (a->task.priority != b->task.priority) return a->task.priority > b->task.priority;
    return a->task.submitted_position < b->task.submitted_position;
  };
  if (out.size() > limit) {
    std::partial_sort(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(limit), out.end(),
                      before);
    out.resize(limit);
  } else {
    std::sort(out.begin(), out.end(), before);
  }
  return out;
}

const QueuedTask* TaskQueue::Find(const std::string& id) const {
  auto it = tasks_.find(id);
  return it == tasks_.end() ? nullptr : &it->second;
}

bool TaskQueue::TakeChanged() {
  bool c = changed_;
  changed_ = false;
  return c;
}

}  // namespace unidesk::handlers
