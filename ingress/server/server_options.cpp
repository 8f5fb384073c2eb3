#include "ingress/server/server_options.h"

#include <stdexcept>

#include "core/duration.h"

namespace unidesk::ingress {

const std::set<std::string> kServerOptionFlags = {
    "public",        "ready-file",     "heartbeat-interval", "idle-timeout",
    "suspect-after", "offline-after",  "dormant-after",      "grace",
    "monitor-tick",  "messages-per-s", "accepts-per-s",      "schedule-interval",
    "api",           "api-ready-file", "accept-timeout"};

const char* const kServerOptionsUsage =
    "ingress and monitor options (durations: 250ms, 15s, 2m, 1h, 7d):\n"
    "  --public HOST:PORT        public listener of the provider ingress (0.0.0.0:8470)\n"
    "  --heartbeat-interval D    told to every agent (15s)\n"
    "  --idle-timeout D          no frame nor pong this long closes a session (2 heartbeats)\n"
    "  --suspect-after D         silent this long: suspect, no new tasks (35s)\n"
    "  --offline-after D         silent this long: offline (90s)\n"
    "  --dormant-after D         offline this long: dormant (7d)\n"
    "  --grace D                 after a monitor takes over, nobody goes suspect/offline (120s)\n"
    "  --monitor-tick D          how often the monitor evaluates (1s)\n"
    "  --messages-per-s N        per-session message rate limit (50, burst 4x)\n"
    "  --accepts-per-s N         new sessions a second before 503 + Retry-After (500)\n"
    "  --schedule-interval D     between passes while tasks wait; a change passes at once (100ms)\n"
    "  --accept-timeout D        an assignment unacknowledged this long is lost (30s)\n"
    "  --api HOST:PORT           the core API's listener, internal only (127.0.0.1:8471)\n"
    "  --api-ready-file PATH     write the bound API port there once listening\n"
    "  --allow-file-urls         tasks may use file:// repositories (single machine, tests)\n"
    "  --ready-file PATH         write the bound ingress port there once listening\n";

core::Result<ServerOptions, std::string> ParseServerOptions(const Args& args) {
  ServerOptions o;
  auto duration = [&](const char* flag,
                      std::chrono::milliseconds& out) -> std::optional<std::string> {
    if (auto v = args.Get(flag)) {
      auto d = core::ParseDuration(*v);
      if (!d || d->count() == 0)
        return std::string("--") + flag + ": '" + *v + "' is not a duration";
      out = *d;
    }
    return std::nullopt;
  };
  auto host_port = [&](const char* flag, std::string& host,
                       unsigned short& port) -> std::optional<std::string> {
    auto v = args.Get(flag);
    if (!v) return std::nullopt;
    auto colon = v->rfind(':');
    if (colon == std::string::npos) return std::string("--") + flag + ": expected HOST:PORT";
    host = v->substr(0, colon);
    try {
      int p = std::stoi(v->substr(colon + 1));
      if (p < 0 || p > 65535) throw std::out_of_range("port");
      port = static_cast<unsigned short>(p);
    } catch (const std::exception&) {
      return std::string("--") + flag + ": '" + v->substr(colon + 1) + "' is not a port";
    }
    return std::nullopt;
  };
  if (auto err = host_port("public", o.ingress.address, o.ingress.port)) return *err;
  if (auto err = host_port("api", o.api.address, o.api.port)) return *err;
  o.allow_file_urls = args.Has("allow-file-urls");
  o.api_ready_file = args.Get("api-ready-file");
  auto& l = o.liveness;
  for (auto [flag, target] :
       std::initializer_list<std::pair<const char*, std::chrono::milliseconds*>>{
           {"heartbeat-interval", &l.heartbeat_interval},
           {"suspect-after", &l.suspect_after},
           {"offline-after", &l.offline_after},
           {"dormant-after", &l.dormant_after},
           {"grace", &l.grace},
           {"monitor-tick", &l.tick}}) {
    if (auto err = duration(flag, *target)) return *err;
  }
  if (auto err = duration("schedule-interval", o.scheduler.interval)) return *err;
  if (auto err = duration("accept-timeout", o.scheduler.accept_timeout)) return *err;
  o.ingress.heartbeat_interval = l.heartbeat_interval;
  o.ingress.idle_timeout = 2 * l.heartbeat_interval;
  if (auto err = duration("idle-timeout", o.ingress.idle_timeout)) return *err;
  if (!args.Get("suspect-after") && args.Get("heartbeat-interval")) {
    l.suspect_after = l.heartbeat_interval * 7 / 3;  // two missed, with slack
  }
  if (l.offline_after < l.suspect_after) {
    return std::string("--offline-after must not be shorter than --suspect-after");
  }
  for (auto [flag, target] : std::initializer_list<std::pair<const char*, double*>>{
           {"messages-per-s", &o.ingress.messages_per_s},
           {"accepts-per-s", &o.ingress.accepts_per_s}}) {
    if (auto v = args.Get(flag)) {
      try {
        *target = std::stod(*v);
        if (*target <= 0) throw std::out_of_range(flag);
      } catch (const std::exception&) {
        return std::string("--") + flag + ": '" + *v + "' is not a positive number";
      }
    }
  }
  o.ingress.message_burst = o.ingress.messages_per_s * 4;
  o.ingress.accept_burst = o.ingress.accepts_per_s * 2;
  o.ready_file = args.Get("ready-file");
  return o;
}

}  // namespace unidesk::ingress
