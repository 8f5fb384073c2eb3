#pragma once
// Durations on the command line: "250ms", "15s", "2m", "1h", "7d"; a bare number is seconds.

#include <chrono>
#include <optional>
#include <string>

namespace unidesk::core {

inline std::optional<std::chrono::milliseconds> ParseDuration(const std::string& text) {
  std::size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    return std::nullopt;
  }
  if (value < 0) return std::nullopt;
  std::string unit = text.substr(used);
  double ms;
  if (unit == "ms") {
    ms = value;
  } else if (unit.empty() || unit == "s") {
    ms = value * 1000;
  } else if (unit == "m") {
    ms = value * 60'000;
  } else if (unit == "h") {
    ms = value * 3'600'000;
  } else if (unit == "d") {
    ms = value * 86'400'000;
  } else {
    return std::nullopt;
  }
  return std::chrono::milliseconds(static_cast<long long>(ms));
}

}  // namespace unidesk::core
