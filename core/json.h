#pragma once
// Small JSON helpers over RapidJSON: validation with readable errors, escaping, object building.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace unidesk::core {

/// nullopt when `text` is one valid JSON object; otherwise why not (with the byte offset).
std::optional<std::string> CheckJsonObject(std::string_view text);

/// `s` as a quoted JSON string literal.
std::string JsonQuote(std::string_view s);

/// Builds a flat JSON object: JsonObject().Str("a","x").Int("n",1).Raw("o","{}").Done().
class JsonObject {
 public:
  JsonObject& Str(std::string_view key, std::string_view value);
  JsonObject& Int(std::string_view key, std::int64_t value);
  JsonObject& Num(std::string_view key, double value);
  JsonObject& Bool(std::string_view key, bool value);
  /// `json` must already be valid JSON.
  JsonObject& Raw(std::string_view key, std::string_view json);
  std::string Done() const { return out_ + "}"; }

 private:
  void Key(std::string_view key);
  std::string out_ = "{";
};

}  // namespace unidesk::core
