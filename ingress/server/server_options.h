#pragma once
// The flags of `unidesk-server` that tune the ingress, the monitor and the scheduler.

#include <optional>
#include <string>

#include "handlers/liveness_rules.h"
#include "handlers/scheduler.h"
#include "ingress/api/api_server.h"
#include "ingress/cli/args.h"
#include "ingress/provider_ingress/settings.h"

namespace unidesk::ingress {

struct ServerOptions {
  IngressSettings ingress;
  handlers::LivenessSettings liveness;
  handlers::SchedulerSettings scheduler;
  api::ApiSettings api;
  bool allow_file_urls = false;               // tasks may name file:// repositories
  std::optional<std::string> api_ready_file;  // gets "PORT\n" once the API listens
  std::optional<std::string> ready_file;      // gets "PORT\n" once the ingress listens
};

/// The valued flags ParseServerOptions reads.
extern const std::set<std::string> kServerOptionFlags;
extern const char* const kServerOptionsUsage;

/// Reads the flags; an error names the flag and says what is wrong.
core::Result<ServerOptions, std::string> ParseServerOptions(const Args& args);

}  // namespace unidesk::ingress
