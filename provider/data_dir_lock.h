#pragma once
// One agent process per data directory: two would share the outbox's numbering and adopt the
// same containers, and the one the server supersedes would stop them. An flock on
// `<data-dir>/agent.lock`, held for the process's life and released by the kernel when it dies
// (so a killed agent never leaves a stale lock).

#include <string>

namespace unidesk::provider {

class DataDirLock {
 public:
  /// Throws std::runtime_error naming the holder's pid when another process holds it.
  explicit DataDirLock(const std::string& data_dir);
  ~DataDirLock();
  DataDirLock(const DataDirLock&) = delete;
  DataDirLock& operator=(const DataDirLock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace unidesk::provider
