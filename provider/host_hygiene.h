#pragma once
// Host hygiene on a node: what the task runtime leaves on disk (env images, git mirrors, the
// workspaces of ended attempts) is collected by a disk watermark and least-recent use, never
// what a running attempt needs. The decision (PlanCollection) is pure; HostHygiene finds the
// items, measures the disk and removes what the plan says.
//
// How last use is known: a mirror's directory and an image's marker file
// (`<data-dir>/images/<tag>`) are touched by the runner each time an attempt uses them
// (TouchUsed); a workspace's is its directory's modification time.

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "core/log.h"

namespace unidesk::provider {

struct CacheItem {
  enum class Kind { kWorkspace, kMirror, kImage };
  Kind kind = Kind::kWorkspace;
  std::string key;   // in-use key: see InUseKey
  std::string path;  // directory, or the image's tag
  std::int64_t bytes = 0;
  std::int64_t last_used_s = 0;  // epoch seconds
};

struct DiskUsage {
  std::int64_t total_bytes = 0;
  std::int64_t free_bytes = 0;
};

struct HygienePolicy {
  /// Above this share of the disk in use, collect least-recently-used items...
  double high_watermark = 0.85;
  /// ...until the share is at most this.
  double low_watermark = 0.70;
  /// A workspace left by an ended attempt (kept for inspection) goes after this, whatever the
  /// disk.
  std::int64_t workspace_ttl_s = 24 * 3600;
};

/// "workspace:<dir name>", "mirror:<mirror path>", "image:<tag>".
std::string InUseKey(CacheItem::Kind kind, const std::string& id);

/// What to remove, in order: expired workspaces, then, while the disk is above the high
/// watermark, the least recently used of the rest until it would be at the low one. Items whose
/// key is in `in_use` are never chosen. Pure.
std::vector<CacheItem> PlanCollection(std::vector<CacheItem> items,
                                      const std::set<std::string>& in_use, DiskUsage disk,
                                      const HygienePolicy& policy, std::int64_t now_s);

/// Marks `path` (a mirror directory or an image marker, created if missing) used now.
void TouchUsed(const std::string& path);
/// `<data_dir>/images/<tag with / and : replaced>`: the marker of an env image's last use.
std::string ImageMarker(const std::string& data_dir, const std::string& tag);

struct CollectionReport {
  int removed = 0;
  std::int64_t freed_bytes = 0;
  std::vector<std::string> failures;  // what could not be removed, and why
};

/// Blocking (disk walks, Docker calls): run it on a thread of its own.
class HostHygiene {
 public:
  HostHygiene(std::string data_dir, std::string docker_socket, HygienePolicy policy,
              core::LoggerPtr log);
  /// The workspaces, mirrors and env images on this node, with size and last use.
  std::vector<CacheItem> Inventory() const;
  /// The disk holding the data directory.
  DiskUsage Disk() const;
  /// One round: inventory, plan, remove. A mirror another process holds locked is skipped.
  CollectionReport Collect(const std::set<std::string>& in_use);

 private:
  std::string data_dir_;
  std::string docker_socket_;
  HygienePolicy policy_;
  core::LoggerPtr log_;
};

}  // namespace unidesk::provider
