#pragma once
// Logging: one named spdlog logger per subsystem, created by main and passed in (no registry).

#include <spdlog/spdlog.h>

#include <memory>
#include <string>

namespace unidesk::core {

using LoggerPtr = std::shared_ptr<spdlog::logger>;

/// A logger named `name` writing to stderr; level from UNIDESK_LOG (info by default).
LoggerPtr MakeLogger(const std::string& name);

/// A logger that drops everything (tests that do not care).
LoggerPtr NullLogger();

}  // namespace unidesk::core
