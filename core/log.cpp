#include "core/log.h"

#include <spdlog/sinks/null_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>

#include <cstdlib>

namespace unidesk::core {

LoggerPtr MakeLogger(const std::string& name) {
  static auto sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  auto logger = std::make_shared<spdlog::logger>(name, sink);
  const char* level = std::getenv("UNIDESK_LOG");
  logger->set_level(spdlog::level::info);
  if (level != nullptr && *level != '\0') {
    auto parsed = spdlog::level::from_str(level);
    // from_str answers `off` for anything it does not know: say so instead of going silent.
    if (parsed == spdlog::level::off && std::string(level) != "off") {
      logger->warn(
          "UNIDESK_LOG={} is not a level (trace, debug, info, warn, error, off); using info",
          level);
    } else {
      logger->set_level(parsed);
    }
  }
  return logger;
}

LoggerPtr NullLogger() {
  return std::make_shared<spdlog::logger>("null", std::make_shared<spdlog::sinks::null_sink_mt>());
}

}  // namespace unidesk::core
