// unidesk-server: the server's composition root. Roles are chosen with --roles.

#include <csignal>
#include <cstdio>
#include <set>
#include <sstream>

#include "core/event_catalogue.h"
#include "core/log.h"
#include "core/migrator.h"
#include "core/pg.h"
#include "core/xid_horizon.h"
#include "ingress/cli/args.h"
#include "ingress/cli/commands.h"
#include "ingress/config.h"
#include "ingress/schema_sources.h"
#include "ingress/server/projector_role.h"

namespace {

constexpr const char* kUsage =
    "usage: unidesk-server [--db CONNINFO] [--roles LIST]\n"
    "       unidesk-server migrate [--db CONNINFO]\n"
    "\n"
    "Runs the server roles (comma-separated; default: all available). Roles in this version:\n"
    "  projector   keeps every read model (projection) up to date from the event log\n"
    "Planned: gateway, ingress, api, scheduler, monitor.\n"
    "The database comes from --db, else $UNIDESK_DB, else " UNIDESK_DEFAULT_DB
    ".\n"
    "It refuses to start when the database schema is not exactly this build's.\n";

const std::set<std::string> kAvailableRoles = {"projector"};

}  // namespace

int main(int argc, char** argv) {
  using namespace unidesk;
  auto parsed = ingress::ParseArgs(argc, argv, 1, {"db", "roles"}, {"help", "version", "json"});
  if (!parsed.ok()) return ingress::Fail(parsed.error() + "\n" + kUsage, 2);
  const ingress::Args& args = parsed.value();
  if (args.Has("help")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (args.Has("version")) {
    std::printf("unidesk-server %s (%s)\n", UNIDESK_VERSION, UNIDESK_GIT_COMMIT);
    return 0;
  }
  std::string conninfo = ingress::DatabaseFrom(args.Get("db"));
  core::EventCatalogue catalogue = core::BuiltinCatalogue();
  auto log = core::MakeLogger("server");
  if (!args.positional.empty()) {
    if (args.positional == std::vector<std::string>{"migrate"}) {
      ingress::CliContext ctx{conninfo, "server:migrate", catalogue, core::MakeLogger("migrate")};
      return ingress::RunMigrate(ctx, args);
    }
    return ingress::Fail("unknown command '" + args.positional[0] + "'\n" + kUsage, 2);
  }

  std::set<std::string> roles = kAvailableRoles;
  if (auto list = args.Get("roles")) {
    roles.clear();
    std::stringstream ss(*list);
    for (std::string r; std::getline(ss, r, ',');) {
      if (r == "all") {
        roles = kAvailableRoles;
      } else if (!kAvailableRoles.count(r)) {
        return ingress::Fail("role '" + r + "' is not available in this version (--help)", 2);
      } else {
        roles.insert(r);
      }
    }
  }

  try {
    auto conn = core::Connect(conninfo);
    auto schema = core::RequireCurrentSchema(*conn, ingress::SchemaSources());
    if (!schema.ok()) return ingress::Fail("refusing to start: " + schema.error().message, 3);
    pqxx::read_transaction tx(*conn);
    if (auto behind = core::CheckXidHorizon(tx)) {
      return ingress::Fail("refusing to start: " + *behind, 3);
    }
  } catch (const std::exception& e) {
    return ingress::Fail(ingress::DatabaseDown(conninfo, e));
  }

  // Signals are taken synchronously by this thread; every other thread has them blocked.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  ingress::ProjectorRole projector(conninfo, catalogue, core::MakeLogger("projector"));
  if (roles.count("projector")) projector.Start();
  log->info("unidesk-server {} ({}) running roles: {}", UNIDESK_VERSION, UNIDESK_GIT_COMMIT,
            args.Get("roles").value_or("all"));
  int sig = 0;
  sigwait(&signals, &sig);
  log->info("signal {} received; stopping", sig);
  projector.Stop();
  log->info("stopped");
  return 0;
}
