#pragma once
// The CLI's commands. Each returns the process exit code (0 ok, 1 failed, 2 usage, 3 schema).

#include <pqxx/pqxx>
#include <string>

#include "core/event_catalogue.h"
#include "core/log.h"
#include "core/result.h"
#include "ingress/cli/args.h"

namespace unidesk::ingress {

/// What every command gets from main.
struct CliContext {
  std::string conninfo;
  std::string actor;  // "cli:<user>"
  const core::EventCatalogue& catalogue;
  core::LoggerPtr log;
};

int RunMigrate(const CliContext& ctx, const Args& args);
int RunEventsTail(const CliContext& ctx, const Args& args);
int RunProjectionsStatus(const CliContext& ctx, const Args& args);
int RunProjectionsRebuild(const CliContext& ctx, const Args& args);
int RunNodesAdd(const CliContext& ctx, const Args& args);
int RunNodesRevoke(const CliContext& ctx, const Args& args);
int RunNodesRotate(const CliContext& ctx, const Args& args);
int RunNodesList(const CliContext& ctx, const Args& args);
int RunNodesShow(const CliContext& ctx, const Args& args);
int RunTasksSubmit(const CliContext& ctx, const Args& args);
int RunTasksList(const CliContext& ctx, const Args& args);
int RunTasksShow(const CliContext& ctx, const Args& args);
int RunTasksCancel(const CliContext& ctx, const Args& args);
int RunTasksRetry(const CliContext& ctx, const Args& args);
int RunTasksLogs(const CliContext& ctx, const Args& args);
/// Why a reference or an input is unusable (a Result's error beside a string value).
struct CliProblem {
  std::string message;
};
/// The id of the task `ref` names: a full id, or a unique prefix of at least 4 characters.
core::Result<std::string, CliProblem> ResolveTaskRef(pqxx::transaction_base& tx,
                                                     const std::string& ref);

/// Prints "unidesk: <message>" to stderr and returns `code`: the one place errors leave the CLI.
int Fail(const std::string& message, int code = 1);
/// The message for an unreachable database, with what to do about it.
std::string DatabaseDown(const std::string& conninfo, const std::exception& e);

}  // namespace unidesk::ingress
