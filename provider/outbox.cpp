#include "provider/outbox.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "core/ids.h"
#include "core/json.h"

namespace unidesk::provider {

namespace {

std::string ReadAll(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

/// Writes `text` to `path` atomically and durably: a temporary file, fsync, rename, fsync dir.
void WriteDurably(const std::string& dir, const std::string& path, const std::string& text) {
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) throw std::runtime_error("cannot write " + tmp);
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
            ::fsync(fd) == 0;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    throw std::runtime_error("cannot write " + path);
  }
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace

Outbox::Outbox(std::string dir) : dir_(std::move(dir)) {
  ::mkdir(dir_.c_str(), 0700);
  struct stat st {};
  if (::stat(dir_.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    throw std::runtime_error("cannot create the outbox folder " + dir_);
  }
  id_ = ReadAll(dir_ + "/id");
  if (id_.empty()) {
    id_ = core::NewUuid();
    WriteDurably(dir_, dir_ + "/id", id_);
  }
  std::string next = ReadAll(dir_ + "/next");
  if (!next.empty()) next_ = std::stoll(next);
}

std::string Outbox::EntryPath(std::int64_t seq) const {
  char name[32];
  std::snprintf(name, sizeof name, "/%012lld.json", static_cast<long long>(seq));
  return dir_ + name;
}

OutboxEntry Outbox::Add(const std::string& kind, const std::string& body_json) {
  std::lock_guard<std::mutex> lock(mu_);
  OutboxEntry e{next_, kind, body_json};
  // The counter moves first: a sequence number is never reused for another report.
  WriteDurably(dir_, dir_ + "/next", std::to_string(next_ + 1));
  ++next_;
  WriteDurably(dir_, EntryPath(e.seq),
               core::JsonObject().Str("kind", kind).Raw("body", body_json).Done());
  return e;
}

void Outbox::Ack(std::int64_t seq) {
  std::lock_guard<std::mutex> lock(mu_);
  ::unlink(EntryPath(seq).c_str());
}

std::vector<OutboxEntry> Outbox::Pending() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<OutboxEntry> out;
  DIR* d = ::opendir(dir_.c_str());
  if (!d) return out;
  while (dirent* ent = ::readdir(d)) {
    std::string name = ent->d_name;
    if (name.size() != 17 || name.substr(12) != ".json") continue;
    std::int64_t seq = std::stoll(name.substr(0, 12));
    core::JsonReader r(ReadAll(dir_ + "/" + name));
    auto kind = r.Str("kind");
    auto body = r.Raw("body");
    if (kind && body) out.push_back({seq, *kind, *body});
  }
  ::closedir(d);
  std::sort(out.begin(), out.end(),
            [](const OutboxEntry& a, const OutboxEntry& b) { return a.seq < b.seq; });
  return out;
}

}  // namespace unidesk::provider
