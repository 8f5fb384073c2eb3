#pragma once
// Reading tasks from the `tasks` read model as JSON: one shape for the CLI's --json and the API.

#include <cstdint>
#include <optional>
#include <pqxx/pqxx>
#include <string>
#include <vector>

namespace unidesk::ingress::api {

/// The columns TaskJson reads, for "SELECT <kTaskColumns> FROM tasks t ...".
extern const char* const kTaskColumns;
/// One task row (selected with kTaskColumns) as a JSON object.
std::string TaskJson(const pqxx::row& r);

/// The task's JSON, or nullopt when there is no such task (yet: the projection may lag).
std::optional<std::string> FindTaskJson(pqxx::transaction_base& tx, const std::string& id);

/// Newest first; `state` "" for every state.
std::vector<std::string> ListTaskJson(pqxx::transaction_base& tx, const std::string& state,
                                      long long limit);

/// One chunk of an attempt's output (a task.log event of stream tasklog-<id>).
struct LogChunkRow {
  std::int64_t seq = 0;  // the node's numbering within the attempt
  std::string stream;    // build, stdout, stderr
  std::string text;
};

/// A page of an attempt's output, in the order the node sent it.
struct TaskLogPage {
  std::string state;      // the task's
  long long latest = 0;   // its latest attempt (0: never placed)
  long long attempt = 0;  // the attempt read: the one asked for, or the latest
  std::vector<LogChunkRow> chunks;
  std::int64_t next = -1;  // pass as `after` to read on
  /// The attempt has ended and every chunk it sent has been read (up to `next`): a follower
  /// stops. Its last chunks commit before its ending, so the state is read first.
  bool complete = false;
};

/// The chunks of `attempt` (0: the latest) after `after` (-1: from the start), at most `limit`;
/// nullopt when there is no such task (yet: the projection may lag its submission).
std::optional<TaskLogPage> ReadTaskLog(pqxx::transaction_base& tx, const std::string& id,
                                       long long attempt, std::int64_t after, long long limit);

}  // namespace unidesk::ingress::api
