#include "core/event_reader.h"

#include <rapidjson/document.h>

#include <limits>
#include <stdexcept>

#include "core/pg.h"

namespace unidesk::core {
namespace {

std::string Columns(EventData data) {
  return std::string(
             "position, tx_id::text, stream_id, stream_version, event_id::text, type, "
             "schema_version, ") +
         (data == EventData::kRead ? "data::text" : "'{}'") +
         ", metadata::text, "
         "to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')";
}

/// A prepared statement's name for the read of `data`.
std::string StatementName(const char* name, EventData data) {
  return data == EventData::kRead ? name : std::string(name) + "_meta";
}

std::string MetaField(const rapidjson::Document& doc, const char* key) {
  auto it = doc.FindMember(key);
  return it != doc.MemberEnd() && it->value.IsString() ? it->value.GetString() : "";
}

RecordedEvent RowToEvent(const pqxx::row& r, const EventCatalogue& catalogue, EventData read) {
  RecordedEvent e;
  e.position.value = r[0].as<std::int64_t>();
  e.tx_id = r[1].as<std::uint64_t>();
  e.stream_id = r[2].c_str();
  e.stream_version = r[3].as<std::int64_t>();
  e.event_id = r[4].c_str();
  e.type = r[5].c_str();
  int stored_version = r[6].as<int>();
  rapidjson::Document meta;
  meta.Parse(r[8].c_str());
  if (meta.IsObject()) {
    e.metadata.actor = MetaField(meta, "actor");
    e.metadata.correlation_id = MetaField(meta, "correlation_id");
    e.metadata.causation_id = MetaField(meta, "causation_id");
    e.metadata.source = MetaField(meta, "source");
  }
  e.recorded_at = r[9].c_str();
  if (read == EventData::kSkip) {
    e.schema_version = stored_version;
    e.data_json = "{}";
    return e;
  }
  // Old shapes are upcast on read; a type this build does not know is passed through as stored,
  // so an older binary can still read (and audit) a newer log.
  std::string data = r[7].c_str();
  auto up = catalogue.Upcast(e.type, stored_version, data);
  if (up.ok()) {
    const EventType* t = catalogue.Find(e.type);
    e.schema_version = t->schema_version;
    e.data_json = std::move(up.value());
  } else {
    e.schema_version = stored_version;
    e.data_json = std::move(data);
  }
  return e;
}

std::vector<RecordedEvent> ToEvents(const pqxx::result& rows, const EventCatalogue& catalogue,
                                    EventData read = EventData::kRead) {
  std::vector<RecordedEvent> out;
  out.reserve(rows.size());
  for (const auto& r : rows) out.push_back(RowToEvent(r, catalogue, read));
  return out;
}

}  // namespace

SafeBatch ReadAfterCursor(pqxx::transaction_base& tx, const EventCatalogue& catalogue,
                          LogCursor after, int limit, bool check_held_back, EventData data) {
  // One statement: the horizon and the rows come from the same snapshot.
  std::string sql =
      "SELECT " + Columns(data) +
      " FROM events WHERE (tx_id, position) > ($1::text::xid8, $2::bigint)"
      " AND tx_id < pg_snapshot_xmin(pg_current_snapshot())"
      // Qualified: a bare `tx_id` would name the ::text output column and sort as text.
      " ORDER BY events.tx_id, events.position LIMIT $3";
  SafeBatch batch;
  batch.events = ToEvents(ExecPrepared(tx, StatementName("read_after_cursor", data), sql,
                                       std::to_string(after.tx_id), after.position, limit),
                          catalogue, data);
  if (check_held_back && static_cast<int>(batch.events.size()) < limit) {
    LogCursor last = batch.events.empty() ? after : batch.events.back().cursor();
    // Compared with the log's last entry (one step down the index): phrased as EXISTS, the
    // planner scanned the whole table whenever the answer was no, i.e. on every caught-up poll.
    auto r = ExecPrepared(
        tx, "read_held_back",
        "SELECT coalesce((SELECT (tx_id, position) > ($1::text::xid8, $2::bigint) FROM events "
        "ORDER BY tx_id DESC, position DESC LIMIT 1), false)",
        std::to_string(last.tx_id), last.position);
    batch.held_back = r[0][0].as<bool>();
  }
  return batch;
}

namespace {

/// A filtered follower's read: `match` is an SQL condition on $4; `name` names the statement.
FollowBatch Follow(pqxx::transaction_base& tx, const EventCatalogue& catalogue, LogCursor after,
                   const char* name, const char* match, const std::string& param, int limit,
                   EventData data) {
  FollowBatch batch;
  auto h = ExecPrepared(
      tx, "follow_horizon",
      "SELECT x::text, coalesce((SELECT tx_id >= x FROM events ORDER BY tx_id DESC, position "
      "DESC LIMIT 1), false) FROM (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS x) h")[0];
  auto xmin = h[0].as<std::uint64_t>();
  batch.held_back = h[1].as<bool>();
  std::string sql = "SELECT " + Columns(data) +
                    " FROM events WHERE (tx_id, position) > ($1::text::xid8, $2::bigint)"
                    " AND tx_id < $3::text::xid8 AND " +
                    match + " ORDER BY events.tx_id, events.position LIMIT $5";
  batch.events =
      ToEvents(ExecPrepared(tx, StatementName(name, data), sql, std::to_string(after.tx_id),
                            after.position, std::to_string(xmin), param, limit),
               catalogue, data);
  batch.next = batch.events.empty() ? after : batch.events.back().cursor();
  if (static_cast<int>(batch.events.size()) < limit) {
    // Every event below the horizon has been seen: continue from the horizon.
    LogCursor horizon{xmin - 1, std::numeric_limits<std::int64_t>::max()};
    if (batch.next < horizon) batch.next = horizon;
  }
  return batch;
}

}  // namespace

FollowBatch ReadStreamsAfterCursor(pqxx::transaction_base& tx, const EventCatalogue& catalogue,
                                   LogCursor after, const std::string& stream_prefix, int limit) {
  return Follow(tx, catalogue, after, "follow_streams", "starts_with(stream_id, $4)", stream_prefix,
                limit, EventData::kRead);
}

namespace {

/// LIKE patterns for type names and prefixes ("task." -> "task.%").
std::string TypePatterns(const std::vector<std::string>& types) {
  std::vector<std::string> patterns;
  for (const auto& t : types) {
    std::string p;
    for (char c : t) {
      if (c == '_' || c == '%' || c == '\\') p.push_back('\\');
      p.push_back(c);
    }
    if (!t.empty() && t.back() == '.') p.push_back('%');  // a prefix
    patterns.push_back(std::move(p));
  }
  return PgArrayLiteral(patterns);
}

}  // namespace

FollowBatch ReadTypesAfterCursor(pqxx::transaction_base& tx, const EventCatalogue& catalogue,
                                 LogCursor after, const std::vector<std::string>& types, int limit,
                                 EventData data) {
  return Follow(tx, catalogue, after, "follow_types", "type LIKE ANY($4::text[])",
                TypePatterns(types), limit, data);
}

std::int64_t CountEvents(pqxx::transaction_base& tx, const std::vector<std::string>& types) {
  if (types.empty()) return tx.exec("SELECT count(*) FROM events")[0][0].as<std::int64_t>();
  return tx
      .exec_params("SELECT count(*) FROM events WHERE type LIKE ANY($1::text[])",
                   TypePatterns(types))[0][0]
      .as<std::int64_t>();
}

std::vector<RecordedEvent> ReadByPosition(pqxx::transaction_base& tx,
                                          const EventCatalogue& catalogue, Position after,
                                          int limit, const EventFilter& filter) {
  std::string sql = "SELECT " + Columns(EventData::kRead) +
                    " FROM events WHERE position > $1 AND ($2::text IS NULL OR stream_id = $2)"
                    " AND ($3::text IS NULL OR type = $3) ORDER BY events.position LIMIT $4";
  const char* stream = filter.stream_id ? filter.stream_id->c_str() : nullptr;
  const char* type = filter.type ? filter.type->c_str() : nullptr;
  return ToEvents(tx.exec_params(sql, after.value, stream, type, limit), catalogue);
}

std::vector<RecordedEvent> ReadStream(pqxx::transaction_base& tx, const EventCatalogue& catalogue,
                                      const std::string& stream_id, std::int64_t from_version,
                                      int limit) {
  std::string sql = "SELECT " + Columns(EventData::kRead) +
                    " FROM events WHERE stream_id = $1 AND stream_version >= $2"
                    " ORDER BY events.stream_version LIMIT $3";
  return ToEvents(tx.exec_params(sql, stream_id, from_version, limit), catalogue);
}

Position HeadPosition(pqxx::transaction_base& tx) {
  auto r = tx.exec("SELECT coalesce(max(position), 0) FROM events");
  return Position{r[0][0].as<std::int64_t>()};
}

}  // namespace unidesk::core
