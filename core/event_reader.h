#pragma once
// Reads of the log: in delivery order up to the safe horizon, by global position, by stream.

#include <optional>
#include <pqxx/pqxx>
#include <string>
#include <vector>

#include "core/event.h"
#include "core/event_catalogue.h"

namespace unidesk::core {

/// One read in delivery order.
struct SafeBatch {
  std::vector<RecordedEvent> events;
  /// True when committed events exist past the horizon: an older transaction is still running.
  bool held_back = false;
};

/// Which events a position read returns.
struct EventFilter {
  std::optional<std::string> stream_id;
  std::optional<std::string> type;
};

/// Whether a read brings the events' data. A follower of the metadata alone (the audit) skips
/// it: the data is most of the log's bytes. Skipped data reads as "{}", not upcast.
enum class EventData { kRead, kSkip };

/// Events after `after` in (tx_id, position) order, only from transactions older than every
/// running one, so no event that commits later can ever sort before what is returned.
/// With `check_held_back`, also tells whether a running transaction is holding delivery back.
SafeBatch ReadAfterCursor(pqxx::transaction_base& tx, const EventCatalogue& catalogue,
                          LogCursor after, int limit, bool check_held_back = true,
                          EventData data = EventData::kRead);

/// What a filtered follower read, and where it goes on from.
struct FollowBatch {
  std::vector<RecordedEvent> events;
  /// After the last event returned, or, when fewer than `limit` matched, past every event below
  /// the horizon (the ones that did not match need not be scanned again).
  LogCursor next;
  /// Committed events wait past the horizon (an older transaction still runs): read again soon,
  /// their commit's NOTIFY has come and gone.
  bool held_back = false;
};

/// Like ReadAfterCursor, but only the events of streams whose id starts with `stream_prefix`,
/// for an in-memory follower that cares about one kind of stream. Two statements: the horizon,
/// then the rows below it. They need no common snapshot, so no transaction around them (a
/// pqxx::nontransaction saves a follower three round trips): every transaction below the
/// horizon had ended before the first statement, so the second sees all of its events.
FollowBatch ReadStreamsAfterCursor(pqxx::transaction_base& tx, const EventCatalogue& catalogue,
                                   LogCursor after, const std::string& stream_prefix, int limit);

/// The same for the events of the given types: exact names, or prefixes ending in '.' ("task.")
/// (a follower that acts on a few kinds of event: the rest of the log never leaves Postgres).
FollowBatch ReadTypesAfterCursor(pqxx::transaction_base& tx, const EventCatalogue& catalogue,
                                 LogCursor after, const std::vector<std::string>& types, int limit,
                                 EventData data = EventData::kRead);

/// How many events of those types (as ReadTypesAfterCursor; empty: all) the log holds.
std::int64_t CountEvents(pqxx::transaction_base& tx, const std::vector<std::string>& types);

/// Events with position > `after`, in position order (for people and tools, not subscribers:
/// a position read can pass over an event whose transaction commits later).
std::vector<RecordedEvent> ReadByPosition(pqxx::transaction_base& tx,
                                          const EventCatalogue& catalogue, Position after,
                                          int limit, const EventFilter& filter = {});

/// Events of one stream with version >= `from_version`, in version order.
std::vector<RecordedEvent> ReadStream(pqxx::transaction_base& tx, const EventCatalogue& catalogue,
                                      const std::string& stream_id, std::int64_t from_version,
                                      int limit);

/// The newest position in the log (0 when empty).
Position HeadPosition(pqxx::transaction_base& tx);

}  // namespace unidesk::core
