// unidesk-server: the server's composition root. Roles are chosen with --roles.

#include <sys/resource.h>

#include <csignal>
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>

#include "core/event_catalogue.h"
#include "core/event_store.h"
#include "core/log.h"
#include "core/migrator.h"
#include "core/pg.h"
#include "core/version.h"
#include "core/xid_horizon.h"
#include "handlers/liveness_monitor.h"
#include "ingress/cli/args.h"
#include "ingress/cli/commands.h"
#include "ingress/config.h"
#include "ingress/provider_ingress/provider_ingress.h"
#include "ingress/schema_sources.h"
#include "ingress/server/projector_role.h"
#include "ingress/server/server_options.h"

namespace {

constexpr const char* kUsage =
    "usage: unidesk-server [--db CONNINFO] [--roles LIST] [options]\n"
    "       unidesk-server migrate [--db CONNINFO]\n"
    "\n"
    "Runs the server roles (comma-separated; default: all available). Roles in this version:\n"
    "  projector   keeps every read model (projection) up to date from the event log\n"
    "  ingress     the public WebSocket endpoint providers dial (/v1/provider)\n"
    "  monitor     the liveness rule: suspect, offline, online, dormant\n"
    "  scheduler   places queued tasks on online nodes that fit (any number of copies)\n"
    "  api         the core REST API (/api/v1/tasks), on an internal address\n"
    "Planned: gateway.\n"
    "The database comes from --db, else $UNIDESK_DB, else " UNIDESK_DEFAULT_DB
    ".\n"
    "It refuses to start when the database schema is not exactly this build's.\n\n";

const std::set<std::string> kAvailableRoles = {"projector", "ingress", "monitor", "scheduler",
                                               "api"};

/// Thousands of sessions need thousands of descriptors: take what the hard limit allows.
void RaiseFileLimit() {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);
  }
}

}  // namespace

int main(int argc, char** argv) {
  using namespace unidesk;
  std::set<std::string> valued = ingress::kServerOptionFlags;
  valued.insert({"db", "roles"});
  auto parsed =
      ingress::ParseArgs(argc, argv, 1, valued, {"help", "version", "json", "allow-file-urls"});
  if (!parsed.ok()) return ingress::Fail(parsed.error() + "\n" + kUsage, 2);
  const ingress::Args& args = parsed.value();
  if (args.Has("help")) {
    std::fputs(kUsage, stdout);
    std::fputs(ingress::kServerOptionsUsage, stdout);
    return 0;
  }
  auto options = ingress::ParseServerOptions(args);
  if (!options.ok()) return ingress::Fail(options.error(), 2);
  if (args.Has("version")) {
    std::printf("unidesk-server %s (%s)\n", UNIDESK_VERSION, core::GitCommit());
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

  RaiseFileLimit();
  core::EventStoreOptions store_options;
  store_options.conninfo = conninfo;
  core::EventStore store(store_options, catalogue, core::MakeLogger("store"));
  handlers::Scheduler scheduler(conninfo, options.value().scheduler, store,
                                core::MakeLogger("scheduler"));
  if (roles.count("scheduler")) {
    // Submissions through this copy's API reach its queue without waiting for the bus.
    store.OnCommitted([&scheduler](const core::AppendRequest& r, const core::AppendOutcome& o) {
      scheduler.Offer(r, o);
    });
  }
  ingress::ProjectorRole projector(conninfo, catalogue, core::MakeLogger("projector"));
  if (roles.count("projector")) projector.Start();
  std::unique_ptr<ingress::ProviderIngress> provider_ingress;
  if (roles.count("ingress")) {
    provider_ingress = std::make_unique<ingress::ProviderIngress>(
        options.value().ingress, conninfo, catalogue, store, core::MakeLogger("ingress"));
    // This copy's scheduler hands its placements over in-process (below).
    if (roles.count("scheduler")) {
      provider_ingress->ExpectHandOverFrom(handlers::Scheduler::Source());
    }
    try {
      provider_ingress->Start();
    } catch (const std::exception& e) {
      projector.Stop();
      return ingress::Fail("cannot listen on " + options.value().ingress.address + ":" +
                               std::to_string(options.value().ingress.port) + ": " + e.what(),
                           1);
    }
    if (auto f = options.value().ready_file) {
      std::ofstream(*f + ".tmp") << provider_ingress->port() << "\n";
      std::rename((*f + ".tmp").c_str(), f->c_str());
    }
  }
  handlers::LivenessMonitor monitor(conninfo, options.value().liveness, store,
                                    core::MakeLogger("monitor"));
  if (roles.count("monitor")) monitor.Start();
  if (provider_ingress && roles.count("scheduler")) {
    // Placements reach nodes connected to this copy without waiting for the bus.
    scheduler.OnPlacementsCommitted(
        [ingress = provider_ingress.get()](const std::vector<handlers::CommittedPlacement>& ps) {
          for (const auto& p : ps) {
            ingress->DeliverAssignment(p.task, p.attempt, p.node, p.spec_json, p.gpu_indices_json);
          }
        });
  }
  if (roles.count("scheduler")) scheduler.Start();
  core::TaskLimits limits;
  limits.allow_file_urls = options.value().allow_file_urls;
  std::unique_ptr<ingress::api::ApiServer> api_server;
  if (roles.count("api")) {
    api_server = std::make_unique<ingress::api::ApiServer>(
        options.value().api, ingress::api::ApiDeps{conninfo, store, limits},
        core::MakeLogger("api"));
    try {
      api_server->Start();
    } catch (const std::exception& e) {
      if (provider_ingress) provider_ingress->Stop();
      scheduler.Stop();
      monitor.Stop();
      projector.Stop();
      return ingress::Fail("cannot listen on " + options.value().api.address + ":" +
                               std::to_string(options.value().api.port) + " (--api): " + e.what(),
                           1);
    }
    if (auto f = options.value().api_ready_file) {
      std::ofstream(*f + ".tmp") << api_server->port() << "\n";
      std::rename((*f + ".tmp").c_str(), f->c_str());
    }
  }
  log->info("unidesk-server {} ({}) running roles: {}", UNIDESK_VERSION, core::GitCommit(),
            args.Get("roles").value_or("all"));
  int sig = 0;
  sigwait(&signals, &sig);
  log->info("signal {} received; stopping", sig);
  if (api_server) api_server->Stop();
  if (provider_ingress) provider_ingress->Stop();
  scheduler.Stop();
  monitor.Stop();
  projector.Stop();
  store.Stop();
  log->info("stopped");
  return 0;
}
