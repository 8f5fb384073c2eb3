#pragma once
// Small JSON helpers over RapidJSON: validation with readable errors, escaping, object building.

#include <cstdint>
#include <memory>
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

/// The members of both objects; `overrides` wins on a shared key. Invalid input counts as {}.
std::string MergeJsonObjects(std::string_view base, std::string_view overrides);

/// Reads the top-level members of a JSON object (event data). Missing, ill-typed or unparsable
/// input reads as nullopt.
class JsonReader {
 public:
  explicit JsonReader(std::string_view json);
  ~JsonReader();
  std::optional<std::string> Str(std::string_view key) const;
  std::optional<std::int64_t> Int(std::string_view key) const;
  std::optional<bool> Bool(std::string_view key) const;
  /// The member re-serialized as compact JSON.
  std::optional<std::string> Raw(std::string_view key) const;

 private:
  struct Doc;
  std::unique_ptr<Doc> doc_;
};

}  // namespace unidesk::core
