// The platform's event types. Every entry here has a row in docs/events.md (checked by a test).

#include "core/event_catalogue.h"

namespace unidesk::core {

EventCatalogue BuiltinCatalogue() {
  return EventCatalogue({
      {"schema.migrated",
       1,
       "schema",
       "`unidesk migrate` applied migrations: {from, to, applied: [names]}",
       {}},
      {"projection.rebuild_requested",
       1,
       "projection-{name}",
       "someone asked to rebuild a projection: {projection}; the owner replays from the start",
       {}},
      {"projection.rebuilt",
       1,
       "projection-{name}",
       "a rebuild caught up with the head: {projection, events, seconds}",
       {}},
  });
}

}  // namespace unidesk::core
