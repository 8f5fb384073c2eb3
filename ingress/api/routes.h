#pragma once
// The core API's routes, apart from the sockets: a request in, a status and a JSON body out.
// Runs on the API's worker threads: reads block on Postgres, a submission does not.
//
//   POST /api/v1/tasks                submit (Idempotency-Key header)   201, or 200 on a repeat
//   GET  /api/v1/tasks[?state=&limit=] newest first                      200 {"tasks":[...]}
//   GET  /api/v1/tasks/{id}            one task                          200, 404
//   POST /api/v1/tasks/{id}/cancel     {"reason": "..."} (optional)      202, 404, 409
//   GET  /healthz, /readyz             process up; Postgres answers      200, 503
// Errors: {"error": code, "field": f, "message": m} (docs/api.md).

#include <functional>
#include <map>
#include <string>

#include "core/event_store.h"
#include "core/task_spec.h"

namespace unidesk::ingress::api {

struct ApiRequest {
  std::string method;  // "GET", "POST"
  std::string target;  // path and query
  std::string body;
  std::string idempotency_key;
  std::string actor;  // from the UniDesk-Actor header ("" = anonymous)
};

struct ApiResponse {
  unsigned status = 200;
  std::string body;  // JSON
  int retry_after_s = 0;
};

struct ApiDeps {
  std::string conninfo;
  core::EventStore& store;
  core::TaskLimits limits;
};

/// Receives the answer to a request; may run on another thread than the one that handled it.
using ApiReply = std::function<void(ApiResponse)>;

/// Answers `request` through `reply`. Most routes reply before returning; the submit route
/// replies when its append's group commits (core::EventStore::AppendAsync), so a worker thread
/// never waits for a commit and one group can carry every submission in flight.
void HandleApiRequest(const ApiRequest& request, ApiDeps& deps, ApiReply reply);

/// "/a/b?x=1&y=2" -> path "/a/b", query {x: "1", y: "2"} (percent-decoded).
struct Target {
  std::string path;
  std::map<std::string, std::string> query;
};
Target ParseTarget(const std::string& target);

}  // namespace unidesk::ingress::api
