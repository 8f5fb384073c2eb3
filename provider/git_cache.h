#pragma once
// The node's git cache: one bare mirror per repository URL, fetched only when a task asks for a
// commit the mirror lacks, and a plain checkout of that commit's tree into a task's workspace.

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

#include "core/result.h"

namespace unidesk::provider {

enum class GitError {
  kInvalidCommitId,  // not a full 40-hex commit id
  kCommitNotFound,   // the repository, even freshly fetched, has no such commit
  kFetchFailed,      // the repository could not be reached or read, or went silent
  kCancelled,        // the caller's `cancelled` hook said stop
  kIo,               // local disk or mirror trouble
};
using GitFailure = core::TypedError<GitError>;

/// What Prepare did. `fetched` is exact: false means no network access happened at all.
struct PrepareOutcome {
  bool fetched = false;
  bool mirror_created = false;
  std::int64_t lock_wait_ms = 0;  // waiting for another Prepare of the same repository
  std::int64_t fetch_ms = 0;
  std::int64_t checkout_ms = 0;
  std::int64_t total_ms = 0;
};
using PrepareResult = core::Result<PrepareOutcome, GitFailure>;

/// Polled while waiting for the mirror lock and during a fetch; true aborts with kCancelled.
using CancelHook = std::function<bool()>;
/// A line of a fetch's progress ("received 120/500 objects (1.2 MiB), ...").
using ProgressHook = std::function<void(const std::string&)>;

/// How fetches run. A fetch runs in a child process (`HELPER git-fetch`, see
/// git_fetch_command.h) so that cancel and the stall limit can always stop it: libgit2 1.5
/// blocks in a read from a server that accepts and never answers, and has no timeout of its own.
struct FetchSettings {
  std::string helper;  // the unidesk-provider binary (the agent: /proc/self/exe); empty:
                       // every fetch fails saying so
  std::chrono::milliseconds stall_timeout{120000};  // no progress this long fails the fetch
};

/// Blocking (runs libgit2, a child process and disk I/O): call from a worker pool, never from
/// an I/O thread. Safe to use from several threads and processes at once; a mirror is only
/// written under an exclusive flock on `MirrorPath(url) + ".lock"`, which dies with its holder.
class GitCache {
 public:
  /// Mirrors live under `<data_dir>/git/mirrors/`.
  explicit GitCache(std::string data_dir, FetchSettings fetch = {});

  /// Writes the tree of `commit_id` (40 hex) of the repository at `url` (given as is to
  /// libgit2) into `workspace_dir`, created if absent. Fetches all refs of `url` into the
  /// mirror first only when the commit is not already there.
  PrepareResult Prepare(const std::string& url, const std::string& commit_id,
                        const std::string& workspace_dir, const CancelHook& cancelled = {},
                        const ProgressHook& progress = {});

  /// `<data_dir>/git/mirrors/<sha256 of url>.git`
  std::string MirrorPath(const std::string& url) const;

 private:
  std::string mirrors_dir_;
  FetchSettings fetch_;
};

}  // namespace unidesk::provider
