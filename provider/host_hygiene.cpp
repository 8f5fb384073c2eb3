#include "provider/host_hygiene.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>

#include "provider/docker_client.h"

namespace unidesk::provider {

namespace fs = std::filesystem;

namespace {

std::int64_t NowSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

/// Bytes of the regular files under `dir` (links not followed).
std::int64_t TreeBytes(const fs::path& dir) {
  std::int64_t total = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    std::error_code ignored;
    if (it->is_regular_file(ignored) && !it->is_symlink(ignored)) {
      total += static_cast<std::int64_t>(it->file_size(ignored));
    }
  }
  return total;
}

/// Epoch seconds of the last modification; 0 when it cannot be read. (stat, because C++17 has
/// no conversion from the filesystem clock to the system clock.)
std::int64_t LastWrite(const fs::path& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 ? static_cast<std::int64_t>(st.st_mtime) : 0;
}

}  // namespace

std::string InUseKey(CacheItem::Kind kind, const std::string& id) {
  switch (kind) {
    case CacheItem::Kind::kWorkspace:
      return "workspace:" + id;
    case CacheItem::Kind::kMirror:
      return "mirror:" + id;
    case CacheItem::Kind::kImage:
      return "image:" + id;
  }
  return id;
}

std::vector<CacheItem> PlanCollection(std::vector<CacheItem> items,
                                      const std::set<std::string>& in_use, DiskUsage disk,
                                      const HygienePolicy& policy, std::int64_t now_s) {
  std::vector<CacheItem> out, rest;
  for (auto& item : items) {
    if (in_use.count(item.key)) continue;
    bool expired = item.kind == CacheItem::Kind::kWorkspace &&
                   now_s - item.last_used_s > policy.workspace_ttl_s;
    (expired ? out : rest).push_back(std::move(item));
  }
  if (disk.total_bytes <= 0) return out;
  std::int64_t used = disk.total_bytes - disk.free_bytes;
  for (const auto& item : out) used -= item.bytes;
  auto share = [&](std::int64_t u) {
    return static_cast<double>(u) / static_cast<double>(disk.total_bytes);
  };
  if (share(used) <= policy.high_watermark) return out;
  // Least recently used first; on a tie, what is cheapest to get back first (a workspace is
  // only kept for inspection, a mirror is a fetch away, an image is a build away).
  std::sort(rest.begin(), rest.end(), [](const CacheItem& a, const CacheItem& b) {
    if (a.last_used_s != b.last_used_s) return a.last_used_s < b.last_used_s;
    return a.kind < b.kind;
  });
  for (auto& item : rest) {
    if (share(used) <= policy.low_watermark) break;
    used -= item.bytes;
    out.push_back(std::move(item));
  }
  return out;
}

void TouchUsed(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    fs::create_directories(fs::path(path).parent_path(), ec);
    std::ofstream(path).put('\n');
    return;
  }
  fs::last_write_time(path, fs::file_time_type::clock::now(), ec);
}

std::string ImageMarker(const std::string& data_dir, const std::string& tag) {
  std::string name = tag;
  std::replace(name.begin(), name.end(), '/', '_');
  std::replace(name.begin(), name.end(), ':', '_');
  return data_dir + "/images/" + name;
}

HostHygiene::HostHygiene(std::string data_dir, std::string docker_socket, HygienePolicy policy,
                         core::LoggerPtr log)
    : data_dir_(std::move(data_dir)),
      docker_socket_(std::move(docker_socket)),
      policy_(policy),
      log_(std::move(log)) {}

std::vector<CacheItem> HostHygiene::Inventory() const {
  std::vector<CacheItem> items;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(data_dir_ + "/work", ec)) {
    if (!e.is_directory()) continue;
    std::string name = e.path().filename().string();
    items.push_back({CacheItem::Kind::kWorkspace, InUseKey(CacheItem::Kind::kWorkspace, name),
                     e.path().string(), TreeBytes(e.path()), LastWrite(e.path())});
  }
  for (const auto& e : fs::directory_iterator(data_dir_ + "/git/mirrors", ec)) {
    if (!e.is_directory() || e.path().extension() != ".git") continue;
    std::string path = e.path().string();
    items.push_back({CacheItem::Kind::kMirror, InUseKey(CacheItem::Kind::kMirror, path), path,
                     TreeBytes(e.path()), LastWrite(e.path())});
  }
  auto images = DockerClient(docker_socket_).ListImages("unidesk-env/*");
  if (!images.ok()) {
    log_->warn("host hygiene: cannot list env images: {}", images.error().message);
  } else {
    for (const auto& image : images.value()) {
      for (const auto& tag : image.tags) {
        if (tag.rfind("unidesk-env/", 0) != 0) continue;
        std::int64_t used = LastWrite(ImageMarker(data_dir_, tag));
        // Each tag is one environment; the image's bytes go with its last tag.
        items.push_back({CacheItem::Kind::kImage, InUseKey(CacheItem::Kind::kImage, tag), tag,
                         image.tags.size() == 1 ? image.size_bytes : 0,
                         used > 0 ? used : image.created_s});
      }
    }
  }
  return items;
}

DiskUsage HostHygiene::Disk() const {
  struct statvfs st {};
  if (statvfs(data_dir_.c_str(), &st) != 0) return {};
  return {static_cast<std::int64_t>(st.f_blocks) * static_cast<std::int64_t>(st.f_frsize),
          static_cast<std::int64_t>(st.f_bavail) * static_cast<std::int64_t>(st.f_frsize)};
}

CollectionReport HostHygiene::Collect(const std::set<std::string>& in_use) {
  CollectionReport report;
  auto plan = PlanCollection(Inventory(), in_use, Disk(), policy_, NowSeconds());
  DockerClient docker(docker_socket_);
  for (const CacheItem& item : plan) {
    std::error_code ec;
    if (item.kind == CacheItem::Kind::kImage) {
      auto removed = docker.RemoveImage(item.path);
      if (!removed.ok()) {
        report.failures.push_back(item.path + ": " + removed.error().message);
        continue;
      }
      fs::remove(ImageMarker(data_dir_, item.path), ec);
    } else if (item.kind == CacheItem::Kind::kMirror) {
      // The mirror's own lock (git_cache): a Prepare holding it is using the mirror now.
      int fd = ::open((item.path + ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
      if (fd < 0 || ::flock(fd, LOCK_EX | LOCK_NB) != 0) {
        if (fd >= 0) ::close(fd);
        continue;
      }
      fs::remove_all(item.path, ec);
      ::close(fd);
    } else {
      fs::remove_all(item.path, ec);
    }
    if (ec) {
      report.failures.push_back(item.path + ": " + ec.message());
      continue;
    }
    ++report.removed;
    report.freed_bytes += item.bytes;
    log_->info("host hygiene: removed {} ({} bytes, last used {} s ago)", item.path, item.bytes,
               NowSeconds() - item.last_used_s);
  }
  for (const auto& f : report.failures) log_->warn("host hygiene: could not remove {}", f);
  return report;
}

}  // namespace unidesk::provider
