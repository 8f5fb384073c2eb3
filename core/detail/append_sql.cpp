#include "core/detail/append_sql.h"

#include <algorithm>
#include <map>
#include <set>

#include "core/detail/append_plan.h"
#include "core/ids.h"
#include "core/json.h"
#include "core/pg.h"

namespace unidesk::core::detail {
namespace {

std::string MetadataJson(const EventMetadata& m, const std::optional<std::string>& key) {
  JsonObject o;
  o.Str("actor", m.actor)
      .Str("correlation_id", m.correlation_id)
      .Str("causation_id", m.causation_id)
      .Str("source", m.source);
  if (key) o.Str("idempotency_key", *key);
  return o.Done();
}

/// The group's reads, sent after its locks in one round trip (a pipeline: the statements still
/// run one after another, and each takes its own snapshot, so the reads see every append that
/// held a lock before this group got it).
struct GroupReads {
  bool first_write = true;  // checked only when asked
  GroupState state;
};

GroupReads LockAndRead(pqxx::work& tx, const std::vector<GroupItem>& items,
                       bool check_first_write) {
  std::set<std::int64_t> lock_keys;
  std::set<std::string> streams, keys, ids;
  for (const auto& it : items) {
    lock_keys.insert(LockKey("stream", it.request->stream_id));
    streams.insert(it.request->stream_id);
    if (it.request->idempotency_key) {
      lock_keys.insert(LockKey("idem", *it.request->idempotency_key));
      keys.insert(*it.request->idempotency_key);
    }
    if (it.ids_supplied) {
      for (const auto& e : it.request->events) ids.insert(e.event_id);
    }
  }
  // The pipeline sends plain SQL, so the arrays go in as quoted literals.
  auto array = [&tx](const std::set<std::string>& values) {
    return tx.quote(PgArrayLiteral({values.begin(), values.end()}));
  };
  pqxx::pipeline p(tx);
  p.retain(5);  // all of them in one batch
  pqxx::pipeline::query_id first_write = 0, locks = 0, versions = 0, key_rows = 0, id_rows = 0;
  // An xid taken before the stream locks could order this group's events before an earlier
  // version of the same stream (docs/architecture.md, "Ordering"): nothing may have written yet.
  if (check_first_write) first_write = p.insert("SELECT pg_current_xact_id_if_assigned() IS NULL");
  // In key order, so two groups never deadlock.
  locks = p.insert(LockAllInOrderSql(tx, lock_keys));
  // One max() per stream walks the (stream_id, stream_version) index backwards: O(1) each.
  versions = p.insert(
      "SELECT s, (SELECT max(stream_version) FROM events WHERE stream_id = s) "
      "FROM unnest(" +
      array(streams) + "::text[]) s");
  if (!keys.empty()) {
    key_rows = p.insert(
        "SELECT key, request_hash, stream_id, first_position, last_position, last_version "
        "FROM idempotency_keys WHERE key = ANY(" +
        array(keys) + "::text[])");
  }
  if (!ids.empty()) {
    id_rows = p.insert(
        "SELECT event_id::text, stream_id, position, stream_version, type FROM events "
        "WHERE event_id = ANY(" +
        array(ids) + "::uuid[])");
  }
  p.complete();
  // In order: an error (a lost connection, say) surfaces as itself at its own statement.
  GroupReads out;
  if (check_first_write) out.first_write = p.retrieve(first_write)[0][0].as<bool>();
  p.retrieve(locks);
  for (const auto& r : p.retrieve(versions)) {
    if (!r[1].is_null()) out.state.stream_versions[r[0].c_str()] = r[1].as<std::int64_t>();
  }
  if (!keys.empty()) {
    for (const auto& r : p.retrieve(key_rows)) {
      out.state.keys[r[0].c_str()] = {r[1].c_str(), r[2].c_str(), r[3].as<std::int64_t>(),
                                      r[4].as<std::int64_t>(), r[5].as<std::int64_t>()};
    }
  }
  if (!ids.empty()) {
    for (const auto& r : p.retrieve(id_rows)) {
      out.state.events_by_id[r[0].c_str()] = {r[1].c_str(), r[2].as<std::int64_t>(),
                                              r[3].as<std::int64_t>(), r[4].c_str()};
    }
  }
  return out;
}

}  // namespace

std::vector<AppendResult> ExecuteGroup(pqxx::work& tx, const EventCatalogue& catalogue,
                                       const std::vector<GroupItem>& items,
                                       bool check_first_write) {
  GroupReads reads = LockAndRead(tx, items, check_first_write);
  if (!reads.first_write) {
    return std::vector<AppendResult>(
        items.size(),
        TypedError<AppendError>{
            AppendError::kTransactionAlreadyWrote,
            "append must be the first write of its transaction (its xid orders delivery)"});
  }
  std::vector<const AppendRequest*> requests;
  std::vector<std::string> hashes;
  for (const auto& it : items) {
    requests.push_back(it.request);
    hashes.push_back(it.hash);
  }
  std::vector<PlanStep> plan = PlanGroup(requests, hashes, std::move(reads.state));

  std::vector<std::string> c_stream, c_version, c_id, c_type, c_schema, c_data, c_meta;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (plan[i].kind != StepKind::kWrite) continue;
    const AppendRequest& r = *items[i].request;
    std::int64_t v = plan[i].first_version;
    for (const auto& e : r.events) {
      c_stream.push_back(r.stream_id);
      c_version.push_back(std::to_string(v++));
      c_id.push_back(e.event_id);
      c_type.push_back(e.type);
      c_schema.push_back(std::to_string(catalogue.Find(e.type)->schema_version));
      c_data.push_back(e.data_json);
      c_meta.push_back(MetadataJson(e.metadata, r.idempotency_key));
    }
  }
  std::map<std::string, std::int64_t> position_of;
  std::uint64_t tx_id = 0;
  if (!c_id.empty()) {
    auto rows = ExecPrepared(
        tx, "append_events",
        "INSERT INTO events (stream_id, stream_version, event_id, type, schema_version, data, "
        "metadata) SELECT * FROM unnest($1::text[], $2::bigint[], $3::uuid[], $4::text[], "
        "$5::int[], $6::jsonb[], $7::jsonb[]) RETURNING event_id::text, position, tx_id::text",
        PgArrayLiteral(c_stream), PgArrayLiteral(c_version), PgArrayLiteral(c_id),
        PgArrayLiteral(c_type), PgArrayLiteral(c_schema), PgArrayLiteral(c_data),
        PgArrayLiteral(c_meta));
    for (const auto& r : rows) position_of[r[0].c_str()] = r[1].as<std::int64_t>();
    if (!rows.empty()) tx_id = rows[0][2].as<std::uint64_t>();
  }

  std::vector<AppendResult> results;
  results.reserve(items.size());
  std::vector<std::string> k_key, k_hash, k_stream, k_first, k_last, k_version;
  for (std::size_t i = 0; i < items.size(); ++i) {
    const PlanStep& step = plan[i];
    if (step.kind == StepKind::kReject) {
      results.emplace_back(step.error);
      continue;
    }
    if (step.kind == StepKind::kRepeat) {
      results.emplace_back(step.repeat);
      continue;
    }
    const AppendRequest& r = *items[i].request;
    AppendOutcome out;
    out.tx_id = tx_id;
    out.first.value = INT64_MAX;
    for (const auto& e : r.events) {
      std::int64_t p = position_of.at(e.event_id);
      out.first.value = std::min(out.first.value, p);
      out.last.value = std::max(out.last.value, p);
    }
    out.last_version = step.first_version + static_cast<std::int64_t>(r.events.size()) - 1;
    if (r.idempotency_key) {
      k_key.push_back(*r.idempotency_key);
      k_hash.push_back(items[i].hash);
      k_stream.push_back(r.stream_id);
      k_first.push_back(std::to_string(out.first.value));
      k_last.push_back(std::to_string(out.last.value));
      k_version.push_back(std::to_string(out.last_version));
    }
    results.emplace_back(out);
  }
  if (!k_key.empty()) {
    ExecPrepared(
        tx, "append_idempotency",
        "INSERT INTO idempotency_keys (key, request_hash, stream_id, first_position, "
        "last_position, last_version) SELECT * FROM unnest($1::text[], $2::text[], $3::text[], "
        "$4::bigint[], $5::bigint[], $6::bigint[])",
        PgArrayLiteral(k_key), PgArrayLiteral(k_hash), PgArrayLiteral(k_stream),
        PgArrayLiteral(k_first), PgArrayLiteral(k_last), PgArrayLiteral(k_version));
  }
  return results;
}

}  // namespace unidesk::core::detail
