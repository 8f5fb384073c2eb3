#include "provider/docker_client.h"

#include <poll.h>
#include <rapidjson/document.h>

#include <boost/asio/local/stream_protocol.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <limits>

#include "core/json.h"
#include "provider/log_cursor.h"

namespace unidesk::provider {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

namespace {

constexpr const char* kApi = "/v1.41";

/// Thrown from a streaming callback to drop the connection.
struct Cancelled {};

DockerFailure Fail(DockerError code, std::string message) {
  return DockerFailure{code, std::move(message)};
}

/// Docker's {"message": "..."} error body, or the body itself.
std::string EngineMessage(const std::string& body) {
  auto m = core::JsonReader(body).Str("message");
  return m ? *m : body;
}

DockerFailure FromStatus(const DockerClient::Response& r, const std::string& what) {
  DockerError code = r.status == 404 ? DockerError::kNotFound : DockerError::kApi;
  return Fail(code, what + ": " + std::to_string(r.status) + " " + EngineMessage(r.body));
}

std::string UrlEncode(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%%%02X", c);
      out += buf;
    }
  }
  return out;
}

std::string Strings(const std::vector<std::string>& v) {
  std::string out = "[";
  for (std::size_t i = 0; i < v.size(); ++i) out += (i ? "," : "") + core::JsonQuote(v[i]);
  return out + "]";
}

std::string Map(const std::map<std::string, std::string>& m) {
  core::JsonObject o;
  for (const auto& [k, v] : m) o.Str(k, v);
  return o.Done();
}

}  // namespace

std::string CreateContainerBody(const ContainerSpec& s) {
  core::JsonObject host;
  host.Raw("Binds", Strings(s.binds));
  if (s.nano_cpus > 0) host.Int("NanoCpus", s.nano_cpus);
  if (s.memory_bytes > 0) {
    // Memory and swap together: the task's memory_mb is all it gets, not twice that on a
    // machine with swap (Docker's default).
    host.Int("Memory", s.memory_bytes).Int("MemorySwap", s.memory_bytes);
  }
  if (!s.gpu_indices.empty()) {
    std::vector<std::string> ids;
    for (int i : s.gpu_indices) ids.push_back(std::to_string(i));
    host.Raw("DeviceRequests", "[" +
                                   core::JsonObject()
                                       .Str("Driver", "nvidia")
                                       .Raw("DeviceIDs", Strings(ids))
                                       .Raw("Capabilities", R"([["gpu"]])")
                                       .Done() +
                                   "]");
  }
  core::JsonObject o;
  o.Str("Image", s.image)
      .Raw("Cmd", Strings(s.cmd))
      .Raw("Env", Strings(s.env))
      .Raw("Labels", Map(s.labels))
      .Bool("Tty", false)
      .Bool("AttachStdout", true)
      .Bool("AttachStderr", true)
      .Raw("HostConfig", host.Done());
  if (!s.working_dir.empty()) o.Str("WorkingDir", s.working_dir);
  return o.Done();
}

DockerResult<DockerClient::Response> DockerClient::Call(
    const std::string& method, const std::string& target, const std::string& body,
    const std::string& content_type, const std::function<void(std::string_view)>& on_chunk,
    const std::function<bool()>& cancelled) {
  try {
    net::io_context ioc;
    net::local::stream_protocol::socket socket(ioc);
    beast::error_code ec;
    socket.connect(net::local::stream_protocol::endpoint(socket_), ec);
    if (ec)
      return Fail(DockerError::kUnreachable,
                  "no Docker engine at " + socket_ + ": " + ec.message());
    http::request<http::string_body> req(http::string_to_verb(method), std::string(kApi) + target,
                                         11);
    req.set(http::field::host, "docker");
    req.set(http::field::user_agent, "unidesk-provider");
    if (!body.empty() || method == "POST") {
      req.set(http::field::content_type, content_type);
      req.body() = body;
      req.prepare_payload();
    }
    http::write(socket, req);
    beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.body_limit(std::numeric_limits<std::uint64_t>::max());  // streams are long
    http::read_header(socket, buffer, parser);
    if (cancelled) socket.non_blocking(true);
    Response r;
    r.status = parser.get().result_int();
    std::size_t passed = 0;
    while (!parser.is_done()) {
      http::read_some(socket, buffer, parser, ec);
      if (ec == net::error::would_block || ec == net::error::try_again) {
        // Non-blocking while a cancel hook is set: a silent stream (a long RUN step) still
        // sees a cancel within 250 ms.
        if (cancelled()) throw Cancelled{};
        pollfd p{socket.native_handle(), POLLIN, 0};
        ::poll(&p, 1, 250);
        continue;
      }
      if (ec == http::error::end_of_stream || ec == net::error::eof) break;
      if (ec) throw beast::system_error(ec);
      std::string& b = parser.get().body();
      if (on_chunk && r.status < 300 && b.size() > passed) {
        on_chunk(std::string_view(b).substr(passed));
        b.clear();  // handed over: keep memory flat on long streams
        passed = 0;
      } else {
        passed = b.size();
      }
    }
    r.body = std::move(parser.get().body());
    return r;
  } catch (const Cancelled&) {
    return Fail(DockerError::kCancelled, "cancelled");
  } catch (const std::exception& e) {
    return Fail(DockerError::kUnreachable, "Docker engine at " + socket_ + ": " + e.what());
  }
}

DockerResult<core::Unit> DockerClient::Ping() {
  auto r = Call("GET", "/_ping");
  if (!r.ok()) return r.error();
  if (r.value().status != 200) return FromStatus(r.value(), "ping");
  return core::Unit{};
}

DockerResult<bool> DockerClient::ImageExists(const std::string& ref) {
  auto r = Call("GET", "/images/" + UrlEncode(ref) + "/json");
  if (!r.ok()) return r.error();
  if (r.value().status == 404) return false;
  if (r.value().status != 200) return FromStatus(r.value(), "image " + ref);
  return true;
}

DockerResult<std::string> DockerClient::Build(
    const std::string& context_tar, const std::string& dockerfile, const std::string& tag,
    const std::map<std::string, std::string>& labels,
    const std::function<void(const std::string&)>& on_line, const std::function<bool()>& cancelled,
    const std::function<void()>& on_activity) {
  std::string target = "/build?t=" + UrlEncode(tag) + "&dockerfile=" + UrlEncode(dockerfile) +
                       "&rm=1&forcerm=1&labels=" + UrlEncode(Map(labels));
  std::string pending, error, image_id;
  // The answer is a stream of JSON objects, one per line; a failed build still answers 200.
  auto consume = [&](std::string_view chunk) {
    if (on_activity) on_activity();  // pull progress too, which is not an output line
    if (cancelled && cancelled()) throw Cancelled{};
    pending.append(chunk);
    for (auto nl = pending.find('\n'); nl != std::string::npos; nl = pending.find('\n')) {
      std::string line = pending.substr(0, nl);
      pending.erase(0, nl + 1);
      if (line.empty()) continue;
      core::JsonReader j(line);
      if (auto s = j.Str("stream")) {
        std::string text = *s;
        while (!text.empty() && text.back() == '\n') text.pop_back();
        if (!text.empty() && on_line) on_line(text);
      }
      if (auto e = j.Str("error")) error = *e;
      if (auto aux = j.Raw("aux")) {
        if (auto id = core::JsonReader(*aux).Str("ID")) image_id = *id;
      }
    }
  };
  auto r = Call("POST", target, context_tar, "application/x-tar", consume, cancelled);
  if (!r.ok()) return r.error();
  if (r.value().status != 200) {
    return Fail(r.value().status == 400 || r.value().status == 500 ? DockerError::kBuildFailed
                                                                   : DockerError::kApi,
                "build: " + EngineMessage(r.value().body));
  }
  if (!pending.empty()) consume("\n");
  if (!error.empty()) return Fail(DockerError::kBuildFailed, error);
  if (image_id.empty()) return Fail(DockerError::kApi, "build ended without an image id");
  return image_id;
}

DockerResult<std::string> DockerClient::Create(const ContainerSpec& spec, const std::string& name) {
  auto r = Call("POST", "/containers/create?name=" + UrlEncode(name), CreateContainerBody(spec));
  if (!r.ok()) return r.error();
  if (r.value().status != 201) return FromStatus(r.value(), "create container");
  auto id = core::JsonReader(r.value().body).Str("Id");
  if (!id) return Fail(DockerError::kApi, "create container: no Id in " + r.value().body);
  return *id;
}

DockerResult<core::Unit> DockerClient::Start(const std::string& id) {
  auto r = Call("POST", "/containers/" + id + "/start");
  if (!r.ok()) return r.error();
  if (r.value().status == 204 || r.value().status == 304) return core::Unit{};
  if (r.value().status == 404) return FromStatus(r.value(), "start");
  return Fail(DockerError::kStartFailed, EngineMessage(r.value().body));
}

DockerResult<core::Unit> DockerClient::Logs(const std::string& id, const std::string& since,
                                            const LogSink& out,
                                            const std::function<bool()>& cancelled) {
  // Without a TTY the stream is multiplexed: 8-byte headers (stream, 0, 0, 0, size BE32), one
  // frame per log entry, each starting with its time and a space (timestamps=1).
  std::string pending;
  auto consume = [&](std::string_view chunk) {
    // A stream that never pauses never blocks, so the hook is asked here too.
    if (cancelled && cancelled()) throw Cancelled{};
    pending.append(chunk);
    std::size_t at = 0;
    while (pending.size() - at >= 8) {
      std::uint32_t size = (static_cast<unsigned char>(pending[at + 4]) << 24) |
                           (static_cast<unsigned char>(pending[at + 5]) << 16) |
                           (static_cast<unsigned char>(pending[at + 6]) << 8) |
                           static_cast<unsigned char>(pending[at + 7]);
      if (pending.size() - at < 8 + size) break;
      std::string_view payload = std::string_view(pending).substr(at + 8, size);
      auto split = SplitTimestamped(payload);
      out(pending[at] == 2, split ? split->first : std::string_view(),
          split ? split->second : payload);
      at += 8 + size;
    }
    pending.erase(0, at);
  };
  std::string target = "/containers/" + id + "/logs?follow=1&stdout=1&stderr=1&timestamps=1";
  if (!since.empty()) target += "&since=" + since;
  auto r = Call("GET", target, "", "application/json", consume, cancelled);
  if (!r.ok()) return r.error();
  if (r.value().status != 200) return FromStatus(r.value(), "logs");
  return core::Unit{};
}

DockerResult<ContainerState> DockerClient::Inspect(const std::string& id) {
  auto r = Call("GET", "/containers/" + id + "/json");
  if (!r.ok()) return r.error();
  if (r.value().status != 200) return FromStatus(r.value(), "inspect");
  auto state = core::JsonReader(r.value().body).Raw("State");
  if (!state) return Fail(DockerError::kApi, "inspect: no State");
  core::JsonReader st(*state);
  ContainerState c;
  c.running = st.Bool("Running").value_or(false);
  c.exit_code = static_cast<int>(st.Int("ExitCode").value_or(0));
  c.oom_killed = st.Bool("OOMKilled").value_or(false);
  return c;
}

DockerResult<int> DockerClient::Wait(const std::string& id,
                                     const std::function<bool()>& cancelled) {
  auto r = Call("POST", "/containers/" + id + "/wait", "", "application/json", {}, cancelled);
  if (!r.ok()) return r.error();
  if (r.value().status != 200) return FromStatus(r.value(), "wait");
  auto code = core::JsonReader(r.value().body).Int("StatusCode");
  if (!code) return Fail(DockerError::kApi, "wait: no StatusCode in " + r.value().body);
  return static_cast<int>(*code);
}

DockerResult<core::Unit> DockerClient::Stop(const std::string& id, int grace_s) {
  auto r = Call("POST", "/containers/" + id + "/stop?t=" + std::to_string(grace_s));
  if (!r.ok()) return r.error();
  if (r.value().status == 204 || r.value().status == 304) return core::Unit{};
  return FromStatus(r.value(), "stop");
}

DockerResult<core::Unit> DockerClient::Remove(const std::string& id) {
  auto r = Call("DELETE", "/containers/" + id + "?force=1&v=1");
  if (!r.ok()) return r.error();
  if (r.value().status == 204) return core::Unit{};
  return FromStatus(r.value(), "remove");
}

DockerResult<std::vector<LabelledContainer>> DockerClient::ListLabelled(const std::string& label) {
  std::string filters = core::JsonObject().Raw("label", Strings({label})).Done();
  auto r = Call("GET", "/containers/json?all=1&filters=" + UrlEncode(filters));
  if (!r.ok()) return r.error();
  if (r.value().status != 200) return FromStatus(r.value(), "list containers");
  rapidjson::Document d;
  d.Parse(r.value().body.c_str());
  if (!d.IsArray()) return DockerFailure{DockerError::kApi, "list containers: not a JSON array"};
  std::vector<LabelledContainer> out;
  for (const auto& c : d.GetArray()) {
    if (!c.IsObject() || !c.HasMember("Id") || !c["Id"].IsString()) continue;
    LabelledContainer lc;
    lc.id = c["Id"].GetString();
    if (c.HasMember("Labels") && c["Labels"].IsObject()) {
      for (auto m = c["Labels"].MemberBegin(); m != c["Labels"].MemberEnd(); ++m) {
        if (m->value.IsString()) lc.labels[m->name.GetString()] = m->value.GetString();
      }
    }
    out.push_back(std::move(lc));
  }
  return out;
}

DockerResult<std::vector<LocalImage>> DockerClient::ListImages(const std::string& pattern) {
  std::string filters = core::JsonObject().Raw("reference", Strings({pattern})).Done();
  auto r = Call("GET", "/images/json?filters=" + UrlEncode(filters));
  if (!r.ok()) return r.error();
  if (r.value().status != 200) return FromStatus(r.value(), "list images");
  rapidjson::Document d;
  d.Parse(r.value().body.c_str());
  if (!d.IsArray()) return DockerFailure{DockerError::kApi, "list images: not a JSON array"};
  std::vector<LocalImage> out;
  for (const auto& i : d.GetArray()) {
    if (!i.IsObject() || !i.HasMember("Id") || !i["Id"].IsString()) continue;
    LocalImage li;
    li.id = i["Id"].GetString();
    if (i.HasMember("RepoTags") && i["RepoTags"].IsArray()) {
      for (const auto& t : i["RepoTags"].GetArray()) {
        if (t.IsString()) li.tags.push_back(t.GetString());
      }
    }
    if (i.HasMember("Size") && i["Size"].IsInt64()) li.size_bytes = i["Size"].GetInt64();
    if (i.HasMember("Created") && i["Created"].IsInt64()) li.created_s = i["Created"].GetInt64();
    out.push_back(std::move(li));
  }
  return out;
}

DockerResult<core::Unit> DockerClient::RemoveImage(const std::string& ref) {
  auto r = Call("DELETE", "/images/" + UrlEncode(ref));
  if (!r.ok()) return r.error();
  if (r.value().status != 200) return FromStatus(r.value(), "remove image " + ref);
  return core::Unit{};
}

DockerResult<std::vector<std::string>> DockerClient::ListByLabel(const std::string& label) {
  auto all = ListLabelled(label);
  if (!all.ok()) return all.error();
  std::vector<std::string> ids;
  for (const auto& c : all.value()) ids.push_back(c.id);
  return ids;
}

}  // namespace unidesk::provider
