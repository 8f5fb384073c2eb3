#pragma once
// The one list of event types the platform knows, each with its schema version and upcasters.

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace unidesk::core {

/// Rewrites the JSON text of version N of a type into version N+1.
using Upcaster = std::function<std::string(const std::string& data_json)>;

/// One declared event type.
struct EventType {
  std::string name;         // "schema.migrated"
  int schema_version = 1;   // current version; appends are stamped with it
  std::string stream;       // stream the type is appended to, e.g. "schema", "projection-{name}"
  std::string description;  // one line, mirrored in docs/events.md
  std::map<int, Upcaster> upcasters;  // from version N (key) to N+1
};

enum class CatalogueError { kUnknownType, kUnknownVersion };

/// The catalogue: appends of undeclared types are refused; reads upcast old versions.
class EventCatalogue {
 public:
  EventCatalogue() = default;
  explicit EventCatalogue(std::vector<EventType> types);

  /// Adds a type; a second declaration of the same name is a programming error.
  void Declare(EventType type);
  /// The declaration of `name`, or nullptr.
  const EventType* Find(std::string_view name) const;
  /// All declarations sorted by name.
  std::vector<const EventType*> All() const;
  /// Brings `data_json` stored at `version` up to the current version of `type`.
  Result<std::string, TypedError<CatalogueError>> Upcast(std::string_view type, int version,
                                                         const std::string& data_json) const;

 private:
  std::map<std::string, EventType, std::less<>> types_;
};

/// The platform's own event types (the catalogue documented in docs/events.md).
EventCatalogue BuiltinCatalogue();

}  // namespace unidesk::core
