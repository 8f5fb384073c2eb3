// unidesk: the command-line client's composition root.

#include <pwd.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "core/event_catalogue.h"
#include "core/log.h"
#include "core/version.h"
#include "ingress/cli/commands.h"
#include "ingress/config.h"

namespace {

constexpr const char* kUsage =
    "usage: unidesk [--db CONNINFO] COMMAND [options]\n"
    "\n"
    "commands:\n"
    "  migrate [--json]                       apply pending schema migrations\n"
    "  events tail [--follow] [--stream S] [--type T] [--since POS] [--limit N] [--json]\n"
    "                                         print events (the last 20 by default)\n"
    "  projections status [--json]            checkpoint and lag of each projection\n"
    "  projections rebuild NAME [--json]      empty NAME's tables and replay every event\n"
    "  nodes add NAME [--label K=V]... [--json]  register a node; prints its token once\n"
    "  nodes revoke NAME [--json]             end a node's token and close its session\n"
    "  nodes rotate NAME [--grace D] [--json] a new token; the old one works D more (1h)\n"
    "  nodes list [--json]                    every node with status, resources, heartbeat\n"
    "  nodes show NAME [--json]               one node in full\n"
    "  tasks submit [--file TASK.json] [flags] [--json] -- COMMAND [ARGS...]\n"
    "               flags: --code-repo URL --code-commit SHA --env-repo URL --env-commit SHA\n"
    "               [--dockerfile PATH] [--name N] [--cpu CORES] [--memory-mb MB] [--gpus N]\n"
    "               [--label K=V]... [--env K=V]... [--priority P] [--timeout SECONDS]\n"
    "               [--max-attempts N] [--retry-on failed,timed_out,lost]\n"
    "               [--idempotency-key K] [--allow-file-urls]\n"
    "  tasks list [--state S] [--limit N] [--json]   newest first, with why a task waits\n"
    "  tasks show ID [--json]                 one task (ID: the id or a unique prefix)\n"
    "  tasks cancel ID [--reason R] [--json]  ask to cancel a task\n"
    "  tasks retry ID [--json]                another attempt of an ended task\n"
    "  tasks logs ID [--attempt N] [--follow] [--json]\n"
    "                                         the output (build, stdout, stderr) of an attempt\n"
    "  version                                print the version and commit\n"
    "\n"
    "The database comes from --db, else $UNIDESK_DB, else the local cluster of ops/up\n"
    "(" UNIDESK_DEFAULT_DB ").\n";

}  // namespace

int main(int argc, char** argv) {
  using namespace unidesk;
  auto parsed = ingress::ParseArgs(argc, argv, 1, {"db",          "stream",       "type",
                                                   "since",       "limit",        "label",
                                                   "file",        "name",         "code-repo",
                                                   "code-commit", "env-repo",     "env-commit",
                                                   "dockerfile",  "cpu",          "memory-mb",
                                                   "gpus",        "env",          "priority",
                                                   "timeout",     "max-attempts", "idempotency-key",
                                                   "retry-on",    "state",        "reason",
                                                   "grace",       "attempt"},
                                   {"json", "follow", "help", "version", "allow-file-urls"});
  if (!parsed.ok()) return ingress::Fail(parsed.error() + "\n" + kUsage, 2);
  const ingress::Args& args = parsed.value();
  const auto& pos = args.positional;
  if (args.Has("help") || pos.empty() || pos[0] == "help") {
    std::fputs(kUsage, pos.empty() && !args.Has("help") ? stderr : stdout);
    return pos.empty() && !args.Has("help") ? 2 : 0;
  }
  if (args.Has("version") || pos[0] == "version") {
    std::printf("unidesk %s (%s)\n", UNIDESK_VERSION, core::GitCommit());
    return 0;
  }
  core::EventCatalogue catalogue = core::BuiltinCatalogue();
  const passwd* pw = getpwuid(getuid());
  const char* user = pw != nullptr ? pw->pw_name : std::getenv("USER");
  ingress::CliContext ctx{ingress::DatabaseFrom(args.Get("db")),
                          std::string("cli:") + (user ? user : std::to_string(getuid())), catalogue,
                          core::MakeLogger("cli")};
  std::string cmd = pos[0] + (pos.size() > 1 ? " " + pos[1] : "");
  if (pos[0] == "migrate" && pos.size() == 1) return ingress::RunMigrate(ctx, args);
  if (cmd == "events tail" && pos.size() == 2) return ingress::RunEventsTail(ctx, args);
  if (cmd == "projections status" && pos.size() == 2) {
    return ingress::RunProjectionsStatus(ctx, args);
  }
  if (cmd == "projections rebuild") return ingress::RunProjectionsRebuild(ctx, args);
  if (cmd == "nodes add" && pos.size() == 3) return ingress::RunNodesAdd(ctx, args);
  if (cmd == "nodes revoke" && pos.size() == 3) return ingress::RunNodesRevoke(ctx, args);
  if (cmd == "nodes rotate" && pos.size() == 3) return ingress::RunNodesRotate(ctx, args);
  if (cmd == "nodes list" && pos.size() == 2) return ingress::RunNodesList(ctx, args);
  if (cmd == "nodes show" && pos.size() == 3) return ingress::RunNodesShow(ctx, args);
  if (cmd == "tasks submit" && pos.size() == 2) return ingress::RunTasksSubmit(ctx, args);
  if (cmd == "tasks list" && pos.size() == 2) return ingress::RunTasksList(ctx, args);
  if (cmd == "tasks show" && pos.size() == 3) return ingress::RunTasksShow(ctx, args);
  if (cmd == "tasks cancel" && pos.size() == 3) return ingress::RunTasksCancel(ctx, args);
  if (cmd == "tasks retry" && pos.size() == 3) return ingress::RunTasksRetry(ctx, args);
  if (cmd == "tasks logs" && pos.size() == 3) return ingress::RunTasksLogs(ctx, args);
  return ingress::Fail("unknown command '" + cmd + "'\n" + kUsage, 2);
}
