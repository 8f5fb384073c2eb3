#include "core/event_catalogue.h"

#include <cassert>

namespace unidesk::core {

EventCatalogue::EventCatalogue(std::vector<EventType> types) {
  for (auto& t : types) Declare(std::move(t));
}

void EventCatalogue::Declare(EventType type) {
  assert(type.schema_version >= 1);
  auto [it, inserted] = types_.emplace(type.name, std::move(type));
  assert(inserted && "event type declared twice");
  (void)it;
  (void)inserted;
}

const EventType* EventCatalogue::Find(std::string_view name) const {
  auto it = types_.find(name);
  return it == types_.end() ? nullptr : &it->second;
}

std::vector<const EventType*> EventCatalogue::All() const {
  std::vector<const EventType*> out;
  for (const auto& [name, t] : types_) out.push_back(&t);
  return out;
}

Result<std::string, TypedError<CatalogueError>> EventCatalogue::Upcast(
    std::string_view type, int version, const std::string& data_json) const {
  const EventType* t = Find(type);
  if (t == nullptr) {
    return TypedError<CatalogueError>{CatalogueError::kUnknownType,
                                      "unknown event type '" + std::string(type) + "'"};
  }
  if (version < 1 || version > t->schema_version) {
    return TypedError<CatalogueError>{
        CatalogueError::kUnknownVersion,
        "event type '" + t->name + "' has no schema version " + std::to_string(version)};
  }
  std::string data = data_json;
  for (int v = version; v < t->schema_version; ++v) {
    auto up = t->upcasters.find(v);
    if (up == t->upcasters.end()) {
      return TypedError<CatalogueError>{CatalogueError::kUnknownVersion,
                                        "no upcaster for '" + t->name + "' v" + std::to_string(v)};
    }
    data = up->second(data);
  }
  return data;
}

}  // namespace unidesk::core
