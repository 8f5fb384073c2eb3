#include "core/event_store.h"

#include <algorithm>
#include <cctype>
#include <future>
#include <set>

#include "core/detail/append_batcher.h"
#include "core/detail/append_plan.h"
#include "core/detail/append_sql.h"
#include "core/detail/notifier.h"
#include "core/ids.h"
#include "core/json.h"
#include "core/limits.h"
#include "core/pg.h"

namespace unidesk::core {
namespace {

TypedError<AppendError> Invalid(AppendError code, std::string message) {
  return {code, std::move(message)};
}

bool IsValidName(const std::string& s) {
  if (s.empty() || s.size() > kMaxNameBytes) return false;
  return std::all_of(s.begin(), s.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == ':' || c == '/' || c == '@';
  });
}

}  // namespace

const char* AppendErrorName(AppendError e) {
  switch (e) {
    case AppendError::kVersionConflict:
      return "version_conflict";
    case AppendError::kIdempotencyMismatch:
      return "idempotency_mismatch";
    case AppendError::kDuplicateEventId:
      return "duplicate_event_id";
    case AppendError::kInvalidRequest:
      return "invalid_request";
    case AppendError::kUnknownEventType:
      return "unknown_event_type";
    case AppendError::kInvalidJson:
      return "invalid_json";
    case AppendError::kEventTooLarge:
      return "event_too_large";
    case AppendError::kTransactionAlreadyWrote:
      return "transaction_already_wrote";
    case AppendError::kUnavailable:
      return "unavailable";
    case AppendError::kCommitUnknown:
      return "commit_unknown";
    case AppendError::kStopped:
      return "stopped";
  }
  return "unknown";
}

std::optional<TypedError<AppendError>> ValidateAppend(const EventCatalogue& catalogue,
                                                      AppendRequest& request) {
  if (!IsValidName(request.stream_id)) {
    return Invalid(AppendError::kInvalidRequest,
                   "stream id must be 1-" + std::to_string(kMaxNameBytes) +
                       " characters of [A-Za-z0-9-_.:/@], got '" + request.stream_id + "'");
  }
  if (request.events.empty()) {
    return Invalid(AppendError::kInvalidRequest, "an append needs at least one event");
  }
  if (request.events.size() > kMaxEventsPerAppend) {
    return Invalid(AppendError::kInvalidRequest,
                   "an append carries at most " + std::to_string(kMaxEventsPerAppend) +
                       " events, got " + std::to_string(request.events.size()));
  }
  if (request.idempotency_key &&
      (request.idempotency_key->empty() || request.idempotency_key->size() > kMaxNameBytes)) {
    return Invalid(AppendError::kInvalidRequest,
                   "idempotency key must be 1-" + std::to_string(kMaxNameBytes) + " bytes");
  }
  if (request.expected.kind == ExpectedVersion::Kind::kExact && request.expected.version < 0) {
    return Invalid(AppendError::kInvalidRequest, "expected version must be >= 0");
  }
  std::set<std::string> ids;
  for (std::size_t i = 0; i < request.events.size(); ++i) {
    NewEvent& e = request.events[i];
    std::string at = "event " + std::to_string(i) + ": ";
    if (catalogue.Find(e.type) == nullptr) {
      return Invalid(AppendError::kUnknownEventType,
                     at + "event type '" + e.type + "' is not in the catalogue (docs/events.md)");
    }
    if (e.data_json.size() > kMaxEventDataBytes) {
      return Invalid(AppendError::kEventTooLarge,
                     at + "data is " + std::to_string(e.data_json.size()) +
                         " bytes; the limit is " + std::to_string(kMaxEventDataBytes));
    }
    if (auto why = CheckJsonObject(e.data_json)) {
      return Invalid(AppendError::kInvalidJson, at + *why);
    }
    for (const std::string* f : {&e.metadata.actor, &e.metadata.correlation_id,
                                 &e.metadata.causation_id, &e.metadata.source}) {
      if (f->size() > kMaxMetadataFieldBytes) {
        return Invalid(
            AppendError::kInvalidRequest,
            at + "a metadata field is over " + std::to_string(kMaxMetadataFieldBytes) + " bytes");
      }
    }
    if (e.event_id.empty()) {
      e.event_id = NewUuid();
    } else {
      std::transform(e.event_id.begin(), e.event_id.end(), e.event_id.begin(),
                     [](unsigned char c) { return std::tolower(c); });
      if (!IsUuid(e.event_id)) {
        return Invalid(AppendError::kInvalidRequest, at + "event id must be a UUID");
      }
    }
    if (!ids.insert(e.event_id).second) {
      return Invalid(AppendError::kInvalidRequest, at + "event id repeated within the request");
    }
  }
  return std::nullopt;
}

EventStore::EventStore(EventStoreOptions options, const EventCatalogue& catalogue, LoggerPtr log)
    : options_(std::move(options)), catalogue_(catalogue), log_(std::move(log)) {
  if (options_.notify) {
    notifier_ = std::make_unique<detail::Notifier>(options_.conninfo, options_.channel,
                                                   options_.notify_min_interval, log_);
  }
  batcher_ = std::make_unique<detail::AppendBatcher>(options_, catalogue_, notifier_.get(), log_);
}

EventStore::~EventStore() { Stop(); }

AppendResult EventStore::Append(AppendRequest request) {
  // The promise is shared: the writer may still be inside set_value when get() returns here.
  auto done = std::make_shared<std::promise<AppendResult>>();
  std::future<AppendResult> result = done->get_future();
  AppendAsync(std::move(request), [done](AppendResult r) { done->set_value(std::move(r)); });
  return result.get();
}

void EventStore::OnCommitted(CommittedAppend f) { batcher_->OnCommitted(std::move(f)); }

void EventStore::AppendAsync(AppendRequest request, AppendCallback done) {
  bool ids_supplied = std::any_of(request.events.begin(), request.events.end(),
                                  [](const NewEvent& e) { return !e.event_id.empty(); });
  if (auto err = ValidateAppend(catalogue_, request)) return done(*err);
  batcher_->Submit(std::move(request), ids_supplied, std::move(done));
}

AppendResult EventStore::AppendInTransaction(pqxx::work& tx, AppendRequest request) {
  bool ids_supplied = std::any_of(request.events.begin(), request.events.end(),
                                  [](const NewEvent& e) { return !e.event_id.empty(); });
  if (auto err = ValidateAppend(catalogue_, request)) return *err;
  try {
    detail::GroupItem item{&request, detail::RequestHash(request), ids_supplied};
    return detail::ExecuteGroup(tx, catalogue_, {item}, /*check_first_write=*/true)[0];
  } catch (const std::exception& e) {
    if (IsConnectionLost(e)) {
      return TypedError<AppendError>{AppendError::kUnavailable,
                                     std::string("Postgres unavailable: ") + e.what()};
    }
    throw;
  }
}

std::vector<AppendResult> EventStore::AppendAllInTransaction(pqxx::work& tx,
                                                             std::vector<AppendRequest>& requests) {
  std::vector<AppendResult> out(requests.size(), AppendResult(AppendOutcome{}));
  std::vector<detail::GroupItem> items;
  std::vector<std::size_t> where;
  for (std::size_t i = 0; i < requests.size(); ++i) {
    AppendRequest& r = requests[i];
    bool ids_supplied = std::any_of(r.events.begin(), r.events.end(),
                                    [](const NewEvent& e) { return !e.event_id.empty(); });
    if (auto err = ValidateAppend(catalogue_, r)) {
      out[i] = *err;
      continue;
    }
    items.push_back({&r, detail::RequestHash(r), ids_supplied});
    where.push_back(i);
  }
  if (items.empty()) return out;
  try {
    auto results = detail::ExecuteGroup(tx, catalogue_, items, /*check_first_write=*/true);
    for (std::size_t k = 0; k < results.size(); ++k) out[where[k]] = std::move(results[k]);
    return out;
  } catch (const std::exception& e) {
    if (IsConnectionLost(e)) {
      for (std::size_t i : where) {
        out[i] = TypedError<AppendError>{AppendError::kUnavailable,
                                         std::string("Postgres unavailable: ") + e.what()};
      }
      return out;
    }
    throw;
  }
}

void LockStreamForAppend(pqxx::transaction_base& tx, const std::string& stream_id) {
  tx.exec_params("SELECT pg_advisory_xact_lock($1)", LockKey("stream", stream_id));
}

void EventStore::NotifyCommitted() {
  if (notifier_) notifier_->Signal();
}

void EventStore::Stop() {
  if (batcher_) batcher_->Stop();
  if (notifier_) notifier_->Stop();
}

}  // namespace unidesk::core
