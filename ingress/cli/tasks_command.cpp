// `unidesk tasks submit|list|show|cancel|retry`: tasks through the core API's task service, and the
// `tasks` read model.

#include <cstdio>
#include <fstream>
#include <pqxx/pqxx>
#include <sstream>

#include "core/event_store.h"
#include "core/ids.h"
#include "core/json.h"
#include "core/pg.h"
#include "ingress/api/task_queries.h"
#include "ingress/api/task_service.h"
#include "ingress/cli/commands.h"

namespace unidesk::ingress {

namespace {

/// Why a command's input is unusable (a Result's error beside a string value).
struct Problem {
  std::string message;
};

core::EventStore MakeTaskStore(const CliContext& ctx) {
  core::EventStoreOptions o;
  o.conninfo = ctx.conninfo;
  o.writer_connections = 1;
  return core::EventStore(o, ctx.catalogue, ctx.log);
}

/// Prints the error (and, with --json, a JSON line on stdout) and returns the exit code.
int TaskFail(const Args& args, const api::TaskError& e) {
  if (args.Has("json")) {
    std::printf("%s\n", core::JsonObject()
                            .Str("error", api::TaskErrorName(e.code))
                            .Str("field", e.field)
                            .Str("message", e.message)
                            .Done()
                            .c_str());
  }
  std::string where = e.field.empty() ? "" : e.field + ": ";
  return Fail(where + e.message, e.code == api::TaskErrorCode::kInvalid ? 2 : 1);
}

/// The submission from --file (a JSON task) with the flags on top.
core::Result<std::string, Problem> SubmissionFrom(const Args& args) {
  std::string base = "{}";
  if (auto f = args.Get("file")) {
    std::ifstream in(*f);
    if (!in) return Problem{"cannot read --file " + *f};
    std::stringstream ss;
    ss << in.rdbuf();
    base = ss.str();
    if (auto bad = core::CheckJsonObject(base)) return Problem{"--file " + *f + ": " + *bad};
  }
  core::JsonObject o;
  for (auto [flag, field] : std::initializer_list<std::pair<const char*, const char*>>{
           {"name", "name"},
           {"code-repo", "code_repo_url"},
           {"code-commit", "code_commit_id"},
           {"env-repo", "env_repo_url"},
           {"env-commit", "env_commit_id"},
           {"dockerfile", "dockerfile_path"}}) {
    if (auto v = args.Get(flag)) o.Str(field, *v);
  }
  auto number = [&](const char* flag, bool integer) -> core::Result<std::string, Problem> {
    std::string v = *args.Get(flag);
    try {
      std::size_t used = 0;
      if (integer) {
        long long n = std::stoll(v, &used);
        if (used == v.size()) return std::to_string(n);
      } else {
        std::stod(v, &used);
        if (used == v.size()) return v;
      }
    } catch (const std::exception&) {
    }
    return Problem{std::string("--") + flag + ": '" + v + "' is not a number"};
  };
  core::JsonObject resources;
  bool any_resource = false;
  for (auto [flag, field, integer] :
       std::initializer_list<std::tuple<const char*, const char*, bool>>{
           {"cpu", "cpu", false}, {"memory-mb", "memory_mb", true}, {"gpus", "gpus", true}}) {
    if (!args.Get(flag)) continue;
    auto n = number(flag, integer);
    if (!n.ok()) return n.error();
    resources.Raw(field, n.value());
    any_resource = true;
  }
  if (any_resource) o.Raw("resources", resources.Done());
  for (auto [flag, field] : std::initializer_list<std::pair<const char*, const char*>>{
           {"priority", "priority"}, {"timeout", "timeout_s"}}) {
    if (!args.Get(flag)) continue;
    auto n = number(flag, true);
    if (!n.ok()) return n.error();
    o.Raw(field, n.value());
  }
  if (args.Get("max-attempts") || args.Get("retry-on")) {
    core::JsonObject retry;
    if (args.Get("max-attempts")) {
      auto n = number("max-attempts", true);
      if (!n.ok()) return n.error();
      retry.Raw("max_attempts", n.value());
    }
    if (auto on = args.Get("retry-on")) {
      // "failed,lost" -> ["failed","lost"]; the server checks the names (field retry.on).
      std::string list = "[";
      std::stringstream ss(*on);
      for (std::string name; std::getline(ss, name, ',');) {
        if (!name.empty()) list += (list.size() > 1 ? "," : "") + core::JsonQuote(name);
      }
      retry.Raw("on", list + "]");
    }
    o.Raw("retry", retry.Done());
  }
  for (auto [flag, field] : std::initializer_list<std::pair<const char*, const char*>>{
           {"label", "labels"}, {"env", "env"}}) {
    auto all = args.GetAll(flag);
    if (all.empty()) continue;
    core::JsonObject m;
    for (const std::string& kv : all) {
      auto eq = kv.find('=');
      if (eq == std::string::npos) {
        return Problem{std::string("--") + flag + " '" + kv + "': expected KEY=VALUE"};
      }
      m.Str(kv.substr(0, eq), kv.substr(eq + 1));
    }
    o.Raw(field, m.Done());
  }
  if (!args.rest.empty()) {
    std::string argv = "[";
    for (std::size_t i = 0; i < args.rest.size(); ++i) {
      argv += (i ? "," : "") + core::JsonQuote(args.rest[i]);
    }
    o.Raw("command", argv + "]");
  }
  return core::MergeJsonObjects(base, o.Done());
}

std::string Age(double s) {
  char buf[32];
  if (s < 120) {
    std::snprintf(buf, sizeof buf, "%.0fs", s);
  } else if (s < 7200) {
    std::snprintf(buf, sizeof buf, "%.0fm", s / 60);
  } else if (s < 172800) {
    std::snprintf(buf, sizeof buf, "%.0fh", s / 3600);
  } else {
    std::snprintf(buf, sizeof buf, "%.0fd", s / 86400);
  }
  return buf;
}

/// What a person reads as the task's situation: "waiting: <reason>" while queued.
std::string Situation(const pqxx::row& r) {
  std::string state = r[2].c_str();
  std::string reason = r[6].c_str();
  if (state == "queued") return reason.empty() ? "queued" : "waiting: " + reason;
  if (state == "assigned") return "assigned to " + std::string(r[4].c_str());
  if (state == "preparing")
    return "preparing (" + std::string(r[17].c_str()) + ") on " + r[4].c_str();
  if (state == "accepted" || state == "running") return state + " on " + r[4].c_str();
  if (r[21].size() && (state == "failed" || state == "timed_out" || state == "lost")) {
    return state + ": " + r[21].c_str();
  }
  if (state == "cancelled" && r[12].size()) return "cancelled: " + std::string(r[12].c_str());
  return state;
}

}  // namespace

/// The id of the task `ref` names: a full id, or a unique prefix of at least 4 characters.
core::Result<std::string, CliProblem> ResolveTaskRef(pqxx::transaction_base& tx,
                                                     const std::string& ref) {
  if (api::IsTaskId(ref)) return ref;
  bool hex = ref.size() >= 4 && ref.size() < 36 &&
             ref.find_first_not_of("0123456789abcdef-") == std::string::npos;
  if (!hex) return CliProblem{"'" + ref + "' is not a task id"};
  auto r = tx.exec_params("SELECT id::text FROM tasks WHERE id::text LIKE $1 || '%' LIMIT 2", ref);
  if (r.empty()) return CliProblem{"no task " + ref + " (`unidesk tasks list`)"};
  if (r.size() > 1) return CliProblem{"'" + ref + "' names more than one task; give more of it"};
  return std::string(r[0][0].c_str());
}

namespace {

/// The task the command's third word names, or a not_found error.
core::Result<std::string, api::TaskError> ResolveArgument(const CliContext& ctx, const Args& args) {
  auto conn = core::Connect(ctx.conninfo);
  pqxx::read_transaction tx(*conn);
  auto resolved = ResolveTaskRef(tx, args.positional.at(2));
  if (!resolved.ok()) {
    return api::TaskError{api::TaskErrorCode::kNotFound, "", resolved.error().message};
  }
  return resolved.value();
}

}  // namespace

int RunTasksSubmit(const CliContext& ctx, const Args& args) {
  auto body = SubmissionFrom(args);
  if (!body.ok()) return Fail(body.error().message, 2);
  core::TaskLimits limits;
  limits.allow_file_urls = args.Has("allow-file-urls");
  api::SubmitRequest req{body.value(), args.Get("idempotency-key").value_or(""), ctx.actor, "cli"};
  try {
    auto store = MakeTaskStore(ctx);
    auto r = api::SubmitTask(store, limits, req);
    store.Stop();
    if (!r.ok()) return TaskFail(args, r.error());
    const auto& s = r.value();
    if (args.Has("json")) {
      std::printf("%s\n", core::JsonObject()
                              .Str("task", s.task_id)
                              .Bool("repeated", s.repeated)
                              .Raw("spec", core::ToJson(s.spec))
                              .Done()
                              .c_str());
    } else {
      std::printf("task %s %s\n", s.task_id.c_str(),
                  s.repeated ? "was submitted before with this key (nothing new)" : "submitted");
      std::printf("  follow it: unidesk tasks show %s\n", s.task_id.substr(0, 8).c_str());
    }
    return 0;
  } catch (const pqxx::broken_connection& e) {
    return Fail(DatabaseDown(ctx.conninfo, e));
  } catch (const std::exception& e) {
    return Fail(e.what());
  }
}

int RunTasksList(const CliContext& ctx, const Args& args) {
  bool json = args.Has("json");
  long long limit = 50;
  if (auto l = args.Get("limit")) {
    try {
      limit = std::stoll(*l);
    } catch (const std::exception&) {
      limit = -1;
    }
    if (limit <= 0) return Fail("--limit: expected a positive number", 2);
  }
  try {
    auto conn = core::Connect(ctx.conninfo);
    pqxx::read_transaction tx(*conn);
    std::string state = args.Get("state").value_or("");
    auto rows = tx.exec_params(std::string("SELECT ") + api::kTaskColumns +
                                   " FROM tasks t WHERE ($1 = '' OR t.state = $1) "
                                   "ORDER BY t.submitted_at DESC NULLS LAST, t.id LIMIT $2",
                               state, limit);
    if (!json) {
      std::printf("%-10s %-20s %-10s %5s %-14s %-5s %s\n", "ID", "NAME", "STATE", "PRIO", "NODE",
                  "AGE", "SITUATION");
    }
    for (const auto& r : rows) {
      if (json) {
        std::printf("%s\n", api::TaskJson(r).c_str());
        continue;
      }
      std::printf("%-10s %-20.20s %-10s %5s %-14.14s %-5s %s\n",
                  std::string(r[0].c_str()).substr(0, 8).c_str(), r[1].c_str(), r[2].c_str(),
                  r[3].c_str(), r[4].size() ? r[4].c_str() : "-", Age(r[16].as<double>()).c_str(),
                  Situation(r).c_str());
    }
    return 0;
  } catch (const pqxx::broken_connection& e) {
    return Fail(DatabaseDown(ctx.conninfo, e));
  } catch (const std::exception& e) {
    return Fail(e.what());
  }
}

int RunTasksShow(const CliContext& ctx, const Args& args) {
  try {
    auto conn = core::Connect(ctx.conninfo);
    pqxx::read_transaction tx(*conn);
    auto id = ResolveTaskRef(tx, args.positional.at(2));
    if (!id.ok()) return Fail(id.error().message);
    auto rows = tx.exec_params(
        std::string("SELECT ") + api::kTaskColumns + " FROM tasks t WHERE t.id = $1::uuid",
        id.value());
    if (rows.empty()) return Fail("no task " + id.value() + " (`unidesk tasks list`)");
    const auto& r = rows[0];
    if (args.Has("json")) {
      std::printf("%s\n", api::TaskJson(r).c_str());
      return 0;
    }
    core::JsonReader spec(r[7].c_str());
    std::printf("task:          %s%s%s\n", r[0].c_str(), r[1].size() ? "  " : "", r[1].c_str());
    std::printf("state:         %s\n", Situation(r).c_str());
    std::printf("priority:      %s\n", r[3].c_str());
    std::printf("code:          %s @ %s\n", spec.Str("code_repo_url").value_or("").c_str(),
                spec.Str("code_commit_id").value_or("").c_str());
    std::printf("env:           %s @ %s, %s\n", spec.Str("env_repo_url").value_or("").c_str(),
                spec.Str("env_commit_id").value_or("").c_str(),
                spec.Str("dockerfile_path").value_or("").c_str());
    std::printf("command:       %s\n", spec.Raw("command").value_or("[]").c_str());
    std::printf("resources:     %s\n", spec.Raw("resources").value_or("{}").c_str());
    std::printf("labels:        %s\n", spec.Raw("labels").value_or("{}").c_str());
    std::printf("submitted:     %s by %s\n", r[9].c_str(), r[8].c_str());
    if (r[5].as<int>() > 0) {
      std::printf("attempt:       %s on %s (GPUs %s), assigned %s after %s ms queued\n",
                  r[5].c_str(), r[4].c_str(), r[13].c_str(), r[10].c_str(), r[14].c_str());
    }
    if (r[30].size()) {
      std::printf("started:       %s (prepare %s ms: git %s ms%s, build %s ms%s)\n", r[30].c_str(),
                  r[28].c_str(), r[26].c_str(),
                  std::string(r[23].c_str()) == "true" ? " fetched" : " cached", r[27].c_str(),
                  std::string(r[25].c_str()) == "true" ? " built" : ", image reused");
    }
    if (r[11].size()) std::printf("finished:      %s\n", r[11].c_str());
    if (r[18].as<int>() >= 0) std::printf("exit code:     %s\n", r[18].c_str());
    if (r[19].size()) {
      std::printf("failure:       %s (%s): %s\n", r[19].c_str(), r[20].c_str(), r[21].c_str());
    }
    std::printf("logs:          unidesk tasks logs %s\n",
                std::string(r[0].c_str()).substr(0, 8).c_str());
    std::printf("events:        unidesk events tail --stream task-%s\n", r[0].c_str());
    return 0;
  } catch (const pqxx::broken_connection& e) {
    return Fail(DatabaseDown(ctx.conninfo, e));
  } catch (const std::exception& e) {
    return Fail(e.what());
  }
}

int RunTasksCancel(const CliContext& ctx, const Args& args) {
  try {
    auto resolved = ResolveArgument(ctx, args);
    if (!resolved.ok()) return TaskFail(args, resolved.error());
    const std::string& id = resolved.value();
    auto store = MakeTaskStore(ctx);
    auto conn = core::Connect(ctx.conninfo);
    auto r = api::CancelTask(*conn, store, id, args.Get("reason").value_or(""), {ctx.actor, "cli"});
    store.Stop();
    if (!r.ok()) return TaskFail(args, r.error());
    if (args.Has("json")) {
      std::printf("%s\n", core::JsonObject()
                              .Str("task", id)
                              .Str("state", r.value().state)
                              .Bool("already", r.value().already)
                              .Done()
                              .c_str());
    } else {
      std::printf("task %s: cancel %s\n", id.c_str(),
                  r.value().already ? "was requested already" : "requested");
    }
    return 0;
  } catch (const pqxx::broken_connection& e) {
    return Fail(DatabaseDown(ctx.conninfo, e));
  } catch (const std::exception& e) {
    return Fail(e.what());
  }
}

int RunTasksRetry(const CliContext& ctx, const Args& args) {
  try {
    auto resolved = ResolveArgument(ctx, args);
    if (!resolved.ok()) return TaskFail(args, resolved.error());
    const std::string& id = resolved.value();
    auto store = MakeTaskStore(ctx);
    auto conn = core::Connect(ctx.conninfo);
    auto r = api::RetryTask(*conn, store, id, {ctx.actor, "cli"});
    store.Stop();
    if (!r.ok()) return TaskFail(args, r.error());
    if (args.Has("json")) {
      std::printf("%s\n", core::JsonObject()
                              .Str("task", id)
                              .Str("state", "queued")
                              .Int("next_attempt", r.value().next_attempt)
                              .Str("ended_as", r.value().ended_as)
                              .Done()
                              .c_str());
    } else {
      std::printf("task %s (%s): attempt %d queued\n", id.c_str(), r.value().ended_as.c_str(),
                  r.value().next_attempt);
    }
    return 0;
  } catch (const pqxx::broken_connection& e) {
    return Fail(DatabaseDown(ctx.conninfo, e));
  } catch (const std::exception& e) {
    return Fail(e.what());
  }
}

}  // namespace unidesk::ingress
