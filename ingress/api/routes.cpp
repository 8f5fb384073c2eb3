#include "ingress/api/routes.h"

#include <limits>
#include <optional>
#include <pqxx/pqxx>

#include "core/json.h"
#include "core/pg.h"
#include "ingress/api/task_queries.h"
#include "ingress/api/task_service.h"

namespace unidesk::ingress::api {

namespace {

ApiResponse Json(unsigned status, std::string body) { return {status, std::move(body), 0}; }

ApiResponse Error(unsigned status, const std::string& code, const std::string& message,
                  const std::string& field = "") {
  ApiResponse r = Json(
      status,
      core::JsonObject().Str("error", code).Str("field", field).Str("message", message).Done());
  if (status == 503) r.retry_after_s = 5;
  return r;
}

ApiResponse FromTaskError(const TaskError& e) {
  switch (e.code) {
    case TaskErrorCode::kInvalid:
      return Error(400, TaskErrorName(e.code), e.message, e.field);
    case TaskErrorCode::kIdempotencyConflict:
    case TaskErrorCode::kConflict:
      return Error(409, TaskErrorName(e.code), e.message, e.field);
    case TaskErrorCode::kNotFound:
      return Error(404, TaskErrorName(e.code), e.message, e.field);
    case TaskErrorCode::kUnavailable:
      return Error(503, TaskErrorName(e.code), e.message, e.field);
  }
  return Error(500, "internal", e.message);
}

/// One connection per worker thread, made on first use and again after a failure.
thread_local std::unique_ptr<pqxx::connection> worker_connection;

pqxx::connection& WorkerConnection(const std::string& conninfo) {
  if (!worker_connection || !worker_connection->is_open()) {
    worker_connection = core::Connect(conninfo);
  }
  return *worker_connection;
}

void DropWorkerConnection() { worker_connection.reset(); }

std::string Actor(const ApiRequest& r) { return r.actor.empty() ? "api:anonymous" : r.actor; }

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string PercentDecode(const std::string& s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && HexValue(s[i + 1]) >= 0 && HexValue(s[i + 2]) >= 0) {
      out.push_back(static_cast<char>(HexValue(s[i + 1]) * 16 + HexValue(s[i + 2])));
      i += 2;
    } else {
      out.push_back(s[i] == '+' ? ' ' : s[i]);
    }
  }
  return out;
}

ApiResponse SubmitResponse(const SubmitResult& r) {
  if (!r.ok()) return FromTaskError(r.error());
  return Json(r.value().repeated ? 200 : 201, core::JsonObject()
                                                  .Str("task", r.value().task_id)
                                                  .Bool("repeated", r.value().repeated)
                                                  .Str("state", "queued")
                                                  .Raw("spec", core::ToJson(r.value().spec))
                                                  .Done());
}

ApiResponse Cancel(const ApiRequest& req, ApiDeps& deps, const std::string& id) {
  std::string reason;
  if (!req.body.empty()) {
    if (auto bad = core::CheckJsonObject(req.body)) return Error(400, "invalid", *bad);
    reason = core::JsonReader(req.body).Str("reason").value_or("");
  }
  auto r = CancelTask(WorkerConnection(deps.conninfo), deps.store, id, reason,
                      {Actor(req), "server/api"});
  if (!r.ok()) return FromTaskError(r.error());
  return Json(202, core::JsonObject()
                       .Str("task", id)
                       .Str("state", r.value().state)
                       .Bool("already", r.value().already)
                       .Done());
}

ApiResponse Retry(const ApiRequest& req, ApiDeps& deps, const std::string& id) {
  auto r = RetryTask(WorkerConnection(deps.conninfo), deps.store, id, {Actor(req), "server/api"});
  if (!r.ok()) return FromTaskError(r.error());
  return Json(202, core::JsonObject()
                       .Str("task", id)
                       .Str("state", "queued")
                       .Int("next_attempt", r.value().next_attempt)
                       .Str("ended_as", r.value().ended_as)
                       .Done());
}

}  // namespace

Target ParseTarget(const std::string& target) {
  Target t;
  auto q = target.find('?');
  t.path = PercentDecode(target.substr(0, q));
  if (q == std::string::npos) return t;
  std::string rest = target.substr(q + 1);
  std::size_t i = 0;
  while (i <= rest.size()) {
    std::size_t amp = rest.find('&', i);
    if (amp == std::string::npos) amp = rest.size();
    std::string pair = rest.substr(i, amp - i);
    if (!pair.empty()) {
      auto eq = pair.find('=');
      t.query[PercentDecode(pair.substr(0, eq))] =
          eq == std::string::npos ? "" : PercentDecode(pair.substr(eq + 1));
    }
    i = amp + 1;
  }
  return t;
}

namespace {

/// `name` from the query as an integer in [lo, hi], `fallback` when absent; nullopt when bad.
std::optional<long long> QueryInt(const Target& t, const std::string& name, long long lo,
                                  long long hi, long long fallback) {
  auto it = t.query.find(name);
  if (it == t.query.end()) return fallback;
  try {
    std::size_t used = 0;
    long long v = std::stoll(it->second, &used);
    if (used == it->second.size() && v >= lo && v <= hi) return v;
  } catch (const std::exception&) {
  }
  return std::nullopt;
}

/// An attempt's output from `after` on; a follower polls with `after` = the answer's `next`
/// until `complete`.
ApiResponse Logs(const Target& t, ApiDeps& deps, const std::string& id) {
  auto attempt = QueryInt(t, "attempt", 1, 1'000'000, 0);
  if (!attempt) return Error(400, "invalid", "a positive attempt number", "attempt");
  auto after = QueryInt(t, "after", -1, std::numeric_limits<long long>::max(), -1);
  if (!after) return Error(400, "invalid", "the `next` of the previous page, or -1", "after");
  auto limit = QueryInt(t, "limit", 1, 10'000, 1'000);
  if (!limit) return Error(400, "invalid", "1..10000", "limit");
  pqxx::read_transaction tx(WorkerConnection(deps.conninfo));
  auto page = ReadTaskLog(tx, id, *attempt, *after, *limit);
  if (!page) return Error(404, "not_found", "no task " + id);
  std::string chunks = "[";
  for (const auto& c : page->chunks) {
    chunks +=
        (chunks.size() > 1 ? "," : "") +
        core::JsonObject().Int("seq", c.seq).Str("stream", c.stream).Str("text", c.text).Done();
  }
  return Json(200, core::JsonObject()
                       .Str("task", id)
                       .Int("attempt", page->attempt)
                       .Str("state", page->state)
                       .Bool("complete", page->complete)
                       .Int("next", page->next)
                       .Raw("chunks", chunks + "]")
                       .Done());
}

/// Every route that answers before returning.
ApiResponse HandleNow(const ApiRequest& req, ApiDeps& deps) {
  Target t = ParseTarget(req.target);
  const std::string prefix = "/api/v1/tasks";
  try {
    if (t.path == "/healthz") return Json(200, R"({"status":"ok"})");
    if (t.path == "/readyz") {
      pqxx::nontransaction tx(WorkerConnection(deps.conninfo));
      tx.exec("SELECT 1");
      return Json(200, R"({"status":"ready","postgres":"ok"})");
    }
    if (t.path == prefix) {
      if (req.method != "GET") return Error(405, "method_not_allowed", "use GET or POST");
      long long limit = 50;
      if (auto it = t.query.find("limit"); it != t.query.end()) {
        try {
          limit = std::stoll(it->second);
        } catch (const std::exception&) {
          limit = 0;
        }
        if (limit <= 0 || limit > 1000) return Error(400, "invalid", "1..1000", "limit");
      }
      std::string state = t.query.count("state") ? t.query["state"] : "";
      pqxx::read_transaction tx(WorkerConnection(deps.conninfo));
      std::string list = "[";
      for (const auto& j : ListTaskJson(tx, state, limit)) {
        list += (list.size() > 1 ? "," : "") + j;
      }
      return Json(200, core::JsonObject().Raw("tasks", list + "]").Done());
    }
    if (t.path.rfind(prefix + "/", 0) == 0) {
      std::string rest = t.path.substr(prefix.size() + 1);
      std::string id = rest.substr(0, rest.find('/'));
      std::string action = rest.size() > id.size() ? rest.substr(id.size() + 1) : "";
      if (!IsTaskId(id)) return Error(404, "not_found", "'" + id + "' is not a task id");
      if (action == "cancel" || action == "retry") {
        if (req.method != "POST") return Error(405, "method_not_allowed", "use POST");
        return action == "cancel" ? Cancel(req, deps, id) : Retry(req, deps, id);
      }
      if (action == "logs") {
        if (req.method != "GET") return Error(405, "method_not_allowed", "use GET");
        return Logs(t, deps, id);
      }
      if (!action.empty()) return Error(404, "not_found", "no route " + t.path);
      if (req.method != "GET") return Error(405, "method_not_allowed", "use GET");
      pqxx::read_transaction tx(WorkerConnection(deps.conninfo));
      auto task = FindTaskJson(tx, id);
      if (!task) return Error(404, "not_found", "no task " + id);
      return Json(200, *task);
    }
    return Error(404, "not_found", "no route " + t.path);
  } catch (const pqxx::broken_connection& e) {
    DropWorkerConnection();
    return Error(503, "unavailable", std::string("Postgres unavailable: ") + e.what());
  } catch (const std::exception& e) {
    DropWorkerConnection();
    return Error(500, "internal", e.what());
  }
}

}  // namespace

void HandleApiRequest(const ApiRequest& req, ApiDeps& deps, ApiReply reply) {
  if (req.method == "POST" && ParseTarget(req.target).path == "/api/v1/tasks") {
    return SubmitTaskAsync(
        deps.store, deps.limits, {req.body, req.idempotency_key, Actor(req), "server/api"},
        [reply = std::move(reply)](SubmitResult r) { reply(SubmitResponse(r)); });
  }
  reply(HandleNow(req, deps));
}

}  // namespace unidesk::ingress::api
