#include "provider/attempt_record.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <variant>

#include "core/json.h"

namespace unidesk::provider {

namespace proto = core::protocol;
namespace fs = std::filesystem;

std::string ToJson(const AttemptRecord& r) {
  return core::JsonObject()
      .Raw("assign", proto::Write(r.assign))
      .Str("container", r.container)
      .Int("started_unix_ms", r.started_unix_ms)
      .Int("log_seq", r.log_seq)
      .Int("log_bytes", r.log_bytes)
      .Int("log_truncated", r.log_truncated ? 1 : 0)
      .Str("log_since", r.cursor.since())
      .Int("log_skip", r.cursor.skip())
      .Done();
}

core::Result<AttemptRecord, std::string> ParseAttemptRecord(std::string_view json) {
  if (auto bad = core::CheckJsonObject(json)) return *bad;
  core::JsonReader doc(json);
  auto assign_json = doc.Raw("assign");
  if (!assign_json) return std::string("no assignment");
  auto msg = proto::ParseServerMessage(*assign_json);
  if (!msg.ok() || !std::holds_alternative<proto::Assign>(msg.value())) {
    return std::string("the assignment is not readable");
  }
  AttemptRecord r;
  r.assign = std::get<proto::Assign>(msg.value());
  r.container = doc.Str("container").value_or("");
  if (r.container.empty()) return std::string("no container");
  r.started_unix_ms = doc.Int("started_unix_ms").value_or(0);
  r.log_seq = doc.Int("log_seq").value_or(0);
  r.log_bytes = doc.Int("log_bytes").value_or(0);
  r.log_truncated = doc.Int("log_truncated").value_or(0) != 0;
  r.cursor = LogCursor(doc.Str("log_since").value_or(""), doc.Int("log_skip").value_or(0));
  return r;
}

AttemptRecords::AttemptRecords(std::string dir) : dir_(std::move(dir)) {
  std::error_code ec;
  fs::create_directories(dir_, ec);
}

std::string AttemptRecords::Path(const std::string& task, std::int64_t attempt) const {
  return dir_ + "/" + task + "-" + std::to_string(attempt) + ".json";
}

bool AttemptRecords::Save(const AttemptRecord& r) const {
  std::string path = Path(r.assign.task, r.assign.attempt);
  std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    f << ToJson(r);
    if (!f.flush()) return false;
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  return !ec;
}

void AttemptRecords::Remove(const std::string& task, std::int64_t attempt) const {
  std::error_code ec;
  fs::remove(Path(task, attempt), ec);
}

AttemptRecords::Loaded AttemptRecords::LoadAll() const {
  Loaded out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    std::string path = entry.path().string();
    if (entry.path().extension() != ".json") {
      fs::remove(entry.path(), ec);  // a temporary file a crash left
      continue;
    }
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    auto r = ParseAttemptRecord(ss.str());
    if (r.ok()) {
      out.records.push_back(std::move(r.value()));
    } else {
      out.unreadable.push_back(path + ": " + r.error());
      fs::remove(entry.path(), ec);
    }
  }
  return out;
}

}  // namespace unidesk::provider
