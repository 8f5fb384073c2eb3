// Benchmark: N simulated providers speaking the real protocol (hello, heartbeats) to one
// provider ingress (`unidesk-server --roles ingress`), all from this one process on one Asio
// thread. They connect, heartbeat every interval (jittered), stay for the hold; then the ingress
// is restarted (SIGTERM, started again on the same port) and every session reconnects with the
// agent's own backoff (provider/backoff.h: full jitter, 1 s doubling to a 60 s cap, Retry-After of
// a 503 honoured). Ceiling beside it: a bare Beast WebSocket server (this binary, --bare-server:
// one io thread, the ingress's timeouts and keep-alive pings, parses every frame, answers hello
// with welcome, no database) holding the same N sessions with the same traffic.
//
//   bench_nodes [N]      (ops/bench nodes N)
// Environment: UNIDESK_BENCH_SESSIONS (N when no argument, 10000), UNIDESK_BENCH_HOLD_S (60),
// UNIDESK_BENCH_HEARTBEAT_S (15), UNIDESK_BENCH_CEILING_S (30; 0 skips the bare server),
// UNIDESK_BENCH_RAMP_S (time allowed for all N to connect, 180), UNIDESK_BENCH_MARGIN_S (after
// the 60 s backoff cap, before a session counts as lost: 15), UNIDESK_BENCH_ROLES (ingress),
// UNIDESK_BENCH_KEEP_LOGS (keep the servers' logs, removed otherwise).

#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/ids.h"
#include "core/pg.h"
#include "core/protocol.h"
#include "provider/backoff.h"
#include "test/bench/bench_util.h"

using namespace unidesk;
using bench::Clock;
using bench::NewToken;
using bench::WaitReady;

namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace net = boost::asio;
namespace proto = core::protocol;
using tcp = net::ip::tcp;
using Millis = std::chrono::milliseconds;

struct Settings {
  int sessions = 10000;
  double hold_s = 60;
  double heartbeat_s = 15;
  double ceiling_s = 30;
  double ramp_s = 180;
  double margin_s = 15;
  double settle_s = 5;  // the first seconds of the hold are not in the CPU window
  std::string roles = "ingress";
};

double EnvNumber(const char* name, double fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atof(v) : fallback;
}

/// Descriptors up to the hard limit: one per session on either side.
void RaiseFileLimit() {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);
  }
}

long FileLimit() {
  rlimit lim{};
  getrlimit(RLIMIT_NOFILE, &lim);
  return static_cast<long>(lim.rlim_cur);
}

// ---------------------------------------------------------------------------------------------
// The simulated providers.

proto::Health Healthy() {
  proto::Health h;
  h.docker_ok = true;
  h.gpus_ok = true;
  return h;
}

struct Node {
  Node(net::io_context& ioc, int i, std::string n, std::string t, std::uint64_t seed)
      : index(i), name(std::move(n)), token(std::move(t)), backoff({}, seed), retry(ioc) {}
  int index;
  std::string name;
  std::string token;
  provider::Backoff backoff;  // the agent's reconnect policy, one per node as in the agent
  net::steady_timer retry;
  std::shared_ptr<class Conn> conn;
  bool connected = false;       // welcome received on the current session
  Clock::time_point back_at{};  // first welcome after the restart began
  int attempts_after = 0;       // attempts since the restart began, and how many got a 503
  int busy_after = 0;
};

/// One node's return after the restart: seconds to its first welcome (-1: not back), attempts.
struct Return {
  double seconds = -1;
  int attempts = 0;
  int busy = 0;
};

class Fleet;

/// One connection attempt of one node and, when it is accepted, the session over it.
class Conn : public std::enable_shared_from_this<Conn> {
 public:
  Conn(Fleet& fleet, Node& node, net::io_context& ioc)
      : fleet_(fleet), node_(node), ws_(ioc), heartbeat_(ioc) {}
  void Start();
  void Stop() {
    stopping_ = true;
    heartbeat_.cancel();
    beast::error_code ignored;
    beast::get_lowest_layer(ws_).socket().close(ignored);
  }

 private:
  void OnConnect(beast::error_code ec);
  void OnHandshake(beast::error_code ec);
  void DoRead() {
    ws_.async_read(buffer_, beast::bind_front_handler(&Conn::OnRead, shared_from_this()));
  }
  void OnRead(beast::error_code ec, std::size_t);
  void ScheduleHeartbeat(Millis delay);
  void Send(std::string text);
  void Ended(Millis retry_after);

  Fleet& fleet_;
  Node& node_;
  websocket::stream<beast::tcp_stream> ws_;
  websocket::response_type response_;
  beast::flat_buffer buffer_;
  net::steady_timer heartbeat_;
  std::string out_;
  bool writing_ = false;
  bool open_ = false;
  bool joined_ = false;
  bool stopping_ = false;
  bool ended_ = false;
  Clock::time_point opened_at_{};
};

/// N nodes dialling one endpoint. Everything but the atomics is touched on the io thread only.
class Fleet {
 public:
  Fleet(net::io_context& ioc, tcp::endpoint ep,
        const std::vector<std::pair<std::string, std::string>>& creds, Millis heartbeat)
      : ioc_(ioc), ep_(ep), host_("127.0.0.1:" + std::to_string(ep.port())), heartbeat_(heartbeat) {
    std::mt19937_64 seeds(std::random_device{}());
    nodes_.reserve(creds.size());
    for (std::size_t i = 0; i < creds.size(); ++i) {
      nodes_.push_back(std::make_unique<Node>(ioc, static_cast<int>(i), creds[i].first,
                                              creds[i].second, seeds()));
    }
  }

  /// Every node dials after a random delay in [0, 1 s): the first retry of a restarted fleet.
  void StartAll() {
    net::post(ioc_, [this] {
      std::uniform_int_distribution<int> first(0, 999);
      for (auto& n : nodes_) Retry(*n, Millis(first(rng_)));
    });
  }

  /// No more reconnects; every connection is closed (abruptly, as a crashed fleet would).
  void StopAll() {
    net::post(ioc_, [this] {
      stopping_ = true;
      for (auto& n : nodes_) {
        n->retry.cancel();
        if (n->conn) n->conn->Stop();
      }
    });
  }

  /// From now on, a node's first welcome is its reconnect time.
  void MarkRestart(Clock::time_point t0) { restart_at_ns_ = t0.time_since_epoch().count(); }

  /// Hello -> welcome of every session so far, in ms (and forgets them).
  std::vector<double> TakeHelloLatencies() {
    std::promise<std::vector<double>> p;
    net::post(ioc_, [&] { p.set_value(std::move(hello_ms_)); });
    return p.get_future().get();
  }
  void AddHelloLatency(double ms) { hello_ms_.push_back(ms); }

  /// Each node's return after the restart.
  std::vector<Return> Returns(Clock::time_point t0) {
    std::promise<std::vector<Return>> p;
    net::post(ioc_, [&] {
      std::vector<Return> out;
      for (auto& n : nodes_) {
        double t = n->back_at == Clock::time_point{} ? -1 : bench::Seconds(t0, n->back_at);
        out.push_back({t, n->attempts_after, n->busy_after});
      }
      p.set_value(std::move(out));
    });
    return p.get_future().get();
  }
  bool restarted() const { return restart_at_ns_ != 0; }

  // Called by Conn on the io thread.
  void Attempt(Node& n) {
    if (stopping_) return;
    ++attempts;
    if (restarted() && n.back_at == Clock::time_point{}) ++n.attempts_after;
    n.conn = std::make_shared<Conn>(*this, n, ioc_);
    n.conn->Start();
  }
  void Retry(Node& n, Millis delay) {
    n.retry.expires_after(delay);
    n.retry.async_wait([this, &n](beast::error_code ec) {
      if (!ec) Attempt(n);
    });
  }
  void OnWelcome(Node& n) {
    ++welcomes;
    n.connected = true;
    ++connected;
    auto t0 = restart_at_ns_.load();
    if (t0 != 0 && n.back_at == Clock::time_point{}) {
      n.back_at = Clock::now();
      ++back;
    }
  }
  /// The attempt or session ended; `joined` for how long, if it got a welcome.
  void OnEnded(Node& n, bool joined, Millis connected_for, Millis retry_after, bool refused) {
    if (n.connected) {
      n.connected = false;
      --connected;
    }
    if (joined) ++drops;
    if (stopping_) return;
    if (refused) return;  // 401/403: the agent would exit; counted in `refused_tokens`
    if (joined) n.backoff.SessionEnded(connected_for);
    Retry(n, n.backoff.Next(retry_after));
  }

  const std::string& host() const { return host_; }
  const tcp::endpoint& endpoint() const { return ep_; }
  Millis heartbeat() const { return heartbeat_; }
  std::mt19937_64& rng() { return rng_; }

  std::atomic<int> connected{0};
  std::atomic<int> back{0};
  std::atomic<int> live_conns{0};
  std::atomic<long long> attempts{0}, welcomes{0}, drops{0}, busy_503{0}, failed{0},
      refused_tokens{0}, heartbeats{0}, skipped_heartbeats{0}, errors{0}, closed_going_away{0},
      closed_other{0}, cut{0};

 private:
  net::io_context& ioc_;
  tcp::endpoint ep_;
  std::string host_;
  Millis heartbeat_;
  std::vector<std::unique_ptr<Node>> nodes_;
  std::mt19937_64 rng_{std::random_device{}()};
  bool stopping_ = false;
  std::atomic<long long> restart_at_ns_{0};
  std::vector<double> hello_ms_;
};

void Conn::Start() {
  ++fleet_.live_conns;
  beast::get_lowest_layer(ws_).expires_after(std::chrono::seconds(10));
  beast::get_lowest_layer(ws_).async_connect(
      fleet_.endpoint(), beast::bind_front_handler(&Conn::OnConnect, shared_from_this()));
}

void Conn::OnConnect(beast::error_code ec) {
  if (ec) {
    ++fleet_.failed;
    return Ended(Millis(0));
  }
  // The agent's settings (provider/agent.cpp).
  beast::get_lowest_layer(ws_).expires_never();
  websocket::stream_base::timeout t;
  t.handshake_timeout = std::chrono::seconds(10);
  t.idle_timeout = std::chrono::seconds(30);
  t.keep_alive_pings = true;
  ws_.set_option(t);
  ws_.read_message_max(proto::kMaxFrameBytes);
  std::string auth = "Bearer " + node_.token;
  ws_.set_option(websocket::stream_base::decorator([auth](websocket::request_type& req) {
    req.set(http::field::authorization, auth);
    req.set(http::field::user_agent, "unidesk-bench-nodes");
  }));
  ws_.async_handshake(response_, fleet_.host(), proto::kPath,
                      beast::bind_front_handler(&Conn::OnHandshake, shared_from_this()));
}

void Conn::OnHandshake(beast::error_code ec) {
  if (ec) {
    unsigned status = response_.result_int();
    if (status == 401 || status == 403) {
      ++fleet_.refused_tokens;
      ended_ = true;
      beast::error_code ignored;
      beast::get_lowest_layer(ws_).socket().close(ignored);
      --fleet_.live_conns;
      fleet_.OnEnded(node_, false, Millis(0), Millis(0), true);
      return;
    }
    if (status == 503) {
      ++fleet_.busy_503;
      if (fleet_.restarted() && node_.back_at == Clock::time_point{}) ++node_.busy_after;
      auto it = response_.find(http::field::retry_after);
      int seconds = it == response_.end() ? 5 : std::atoi(std::string(it->value()).c_str());
      return Ended(Millis(std::max(1, seconds) * 1000));
    }
    ++fleet_.failed;
    return Ended(Millis(0));
  }
  open_ = true;
  opened_at_ = Clock::now();
  ws_.text(true);
  proto::Hello hello;
  hello.id = core::NewUuid();
  hello.node = node_.name;
  hello.agent_version = "bench";
  hello.protocol_version = proto::kVersion;
  hello.resources.cpu_cores = 32;
  hello.resources.memory_bytes = 128LL << 30;
  hello.resources.disk_bytes = 2LL << 40;
  hello.resources.disk_free_bytes = 1LL << 40;
  hello.resources.gpus = {{0, "NVIDIA A100-SXM4-80GB", 80LL << 30}};
  hello.runtimes = {"docker"};
  hello.health = Healthy();
  Send(proto::Write(hello));
  DoRead();
}

void Conn::OnRead(beast::error_code ec, std::size_t) {
  if (ec) {
    if (joined_ && !stopping_) {
      if (ec != websocket::error::closed) {
        ++fleet_.cut;  // no close frame: the connection just ended
      } else if (ws_.reason().code == websocket::close_code::going_away) {
        ++fleet_.closed_going_away;
      } else {
        ++fleet_.closed_other;
      }
    }
    return Ended(Millis(0));
  }
  std::string text = beast::buffers_to_string(buffer_.data());
  buffer_.consume(buffer_.size());
  auto parsed = proto::ParseServerMessage(text);
  if (!parsed.ok()) {
    ++fleet_.errors;
  } else if (auto* w = std::get_if<proto::Welcome>(&parsed.value())) {
    if (!joined_) {
      joined_ = true;
      fleet_.AddHelloLatency(bench::Millis(opened_at_, Clock::now()));
      fleet_.OnWelcome(node_);
      Millis interval(w->heartbeat_interval_ms);
      // The first heartbeat at a random point of the interval, so the fleet's beats are spread.
      ScheduleHeartbeat(
          Millis(std::uniform_int_distribution<long long>(0, interval.count())(fleet_.rng())));
    }
  } else if (std::get_if<proto::Error>(&parsed.value())) {
    ++fleet_.errors;
  }
  DoRead();
}

void Conn::ScheduleHeartbeat(Millis delay) {
  heartbeat_.expires_after(delay);
  heartbeat_.async_wait([self = shared_from_this()](beast::error_code ec) {
    if (ec || !self->open_ || self->stopping_) return;
    if (self->writing_) {
      ++self->fleet_.skipped_heartbeats;
    } else {
      ++self->fleet_.heartbeats;
      self->Send(proto::Write(proto::Heartbeat{core::NewUuid(), Healthy()}));
    }
    // Every interval, jittered by ±10 %.
    auto base = self->fleet_.heartbeat().count();
    self->ScheduleHeartbeat(Millis(std::uniform_int_distribution<long long>(
        base * 9 / 10, base * 11 / 10)(self->fleet_.rng())));
  });
}

void Conn::Send(std::string text) {
  out_ = std::move(text);
  writing_ = true;
  ws_.async_write(net::buffer(out_), [self = shared_from_this()](beast::error_code, std::size_t) {
    self->writing_ = false;  // a failed write shows on the read side
  });
}

void Conn::Ended(Millis retry_after) {
  if (ended_) return;
  ended_ = true;
  open_ = false;
  heartbeat_.cancel();
  beast::error_code ignored;
  beast::get_lowest_layer(ws_).socket().close(ignored);
  --fleet_.live_conns;
  auto connected_for = std::chrono::duration_cast<Millis>(Clock::now() - opened_at_);
  fleet_.OnEnded(node_, joined_, connected_for, retry_after, false);
}

// ---------------------------------------------------------------------------------------------
// The ceiling: a bare Beast server (this binary with --bare-server), run as a child process.

class BareSession : public std::enable_shared_from_this<BareSession> {
 public:
  BareSession(tcp::socket s, Millis idle) : ws_(std::move(s)), idle_(idle) {}
  void Start() {
    beast::get_lowest_layer(ws_).expires_after(std::chrono::seconds(10));
    http::async_read(beast::get_lowest_layer(ws_), buffer_, req_,
                     [self = shared_from_this()](beast::error_code ec, std::size_t) {
                       if (ec) return;
                       self->Accept();
                     });
  }

 private:
  void Accept() {
    beast::get_lowest_layer(ws_).expires_never();
    websocket::stream_base::timeout t;  // the ingress's (provider_session.cpp)
    t.handshake_timeout = std::chrono::seconds(10);
    t.idle_timeout = idle_;
    t.keep_alive_pings = true;
    ws_.set_option(t);
    ws_.read_message_max(proto::kMaxFrameBytes);
    ws_.async_accept(req_, [self = shared_from_this()](beast::error_code ec) {
      if (ec) return;
      self->ws_.text(true);
      self->DoRead();
    });
  }
  void DoRead() {
    buffer_.consume(buffer_.size());
    ws_.async_read(buffer_, [self = shared_from_this()](beast::error_code ec, std::size_t) {
      if (ec) return;
      std::string text = beast::buffers_to_string(self->buffer_.data());
      auto parsed = proto::ParseProviderMessage(text);
      if (parsed.ok()) {
        if (auto* hello = std::get_if<proto::Hello>(&parsed.value())) {
          self->out_ = proto::Write(proto::Welcome{hello->id, core::NewUuid(), hello->node,
                                                   self->idle_.count() / 2, "bare"});
          self->ws_.async_write(net::buffer(self->out_), [self](beast::error_code, std::size_t) {});
        }
      }
      self->DoRead();
    });
  }
  websocket::stream<beast::tcp_stream> ws_;
  Millis idle_;
  beast::flat_buffer buffer_;
  http::request<http::string_body> req_;
  std::string out_;
};

int RunBareServer(const std::string& ready_file, Millis heartbeat) {
  RaiseFileLimit();
  net::io_context ioc(1);
  tcp::acceptor acceptor(ioc, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
  acceptor.listen(net::socket_base::max_listen_connections);
  std::function<void()> accept = [&] {
    acceptor.async_accept([&](beast::error_code ec, tcp::socket s) {
      if (!ec) std::make_shared<BareSession>(std::move(s), 2 * heartbeat)->Start();
      accept();
    });
  };
  accept();
  std::ofstream(ready_file + ".tmp") << acceptor.local_endpoint().port() << "\n";
  std::rename((ready_file + ".tmp").c_str(), ready_file.c_str());
  ioc.run();
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Orchestration.

/// CPU seconds (all threads) and resident memory of another process, from /proc.
struct ProcSample {
  double cpu_s = 0;
  double rss_mb = 0;
  double hwm_mb = 0;
};

/// Fields of /proc/PID/stat after "(comm) ": f[0] is field 3 (state), f[1] the parent's pid,
/// f[11] and f[12] utime and stime (fields 14 and 15), f[13] and f[14] cutime and cstime (of
/// children it waited for). Empty when the process is gone.
std::vector<std::string> StatFields(int pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string all((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  std::vector<std::string> f;
  auto close = all.rfind(')');
  if (close == std::string::npos) return f;
  std::istringstream rest(all.substr(close + 2));
  for (std::string w; rest >> w;) f.push_back(w);
  return f;
}

double CpuSeconds(const std::vector<std::string>& f) {
  if (f.size() < 13) return 0;
  return (std::stod(f[11]) + std::stod(f[12])) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

/// CPU seconds of the cluster ops/bench started: its postmaster, the children it reaped
/// (cutime + cstime: backends that exited) and the live ones; -1 when UNIDESK_BENCH_PGDIR is not
/// set.
double PostgresCpuSeconds() {
  const char* dir = std::getenv("UNIDESK_BENCH_PGDIR");
  if (!dir || !*dir) return -1;
  std::ifstream pidfile(std::string(dir) + "/data/postmaster.pid");
  int postmaster = 0;
  if (!(pidfile >> postmaster)) return -1;
  double sum = 0;
  for (const auto& e : std::filesystem::directory_iterator("/proc")) {
    std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    int pid = std::atoi(name.c_str());
    auto f = StatFields(pid);
    if (pid == postmaster && f.size() > 14) {
      sum += CpuSeconds(f) +
             (std::stod(f[13]) + std::stod(f[14])) / static_cast<double>(sysconf(_SC_CLK_TCK));
    } else if (f.size() > 1 && std::atoi(f[1].c_str()) == postmaster) {
      sum += CpuSeconds(f);
    }
  }
  return sum;
}

ProcSample Sample(int pid) {
  ProcSample s;
  auto f = StatFields(pid);
  if (f.size() < 13) throw std::runtime_error("cannot read /proc/" + std::to_string(pid) + "/stat");
  s.cpu_s = CpuSeconds(f);
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmRSS:", 0) == 0) s.rss_mb = std::atof(line.c_str() + 6) / 1024.0;
    if (line.rfind("VmHWM:", 0) == 0) s.hwm_mb = std::atof(line.c_str() + 6) / 1024.0;
  }
  return s;
}

/// A port free now on 127.0.0.1, so the restarted ingress can take the same one.
unsigned short FreePort() {
  net::io_context ioc;
  tcp::acceptor a(ioc, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
  return a.local_endpoint().port();
}

/// N nodes and tokens. Load test: the credentials are inserted directly (one statement), without
/// the node.registered events `unidesk nodes add` appends with them; the ingress reads only
/// node_credentials.
std::vector<std::pair<std::string, std::string>> CreateNodes(const std::string& db, int n) {
  std::mt19937_64 rng(std::random_device{}());
  std::vector<std::pair<std::string, std::string>> out;
  std::vector<std::string> names, hashes;
  char buf[32];
  for (int i = 0; i < n; ++i) {
    std::snprintf(buf, sizeof buf, "bench-%05d", i);
    out.emplace_back(buf, NewToken(rng));
    names.push_back(buf);
    hashes.push_back(core::Sha256Hex(out.back().second));
  }
  pqxx::connection c(db);
  pqxx::work tx(c);
  tx.exec_params(
      "INSERT INTO node_credentials (node, token_sha256) "
      "SELECT * FROM unnest($1::text[], $2::text[])",
      core::PgArrayLiteral(names), core::PgArrayLiteral(hashes));
  tx.commit();
  return out;
}

/// Waits until `done` or `timeout`; returns the seconds waited.
double WaitFor(const std::function<bool()>& done, double timeout_s) {
  auto start = Clock::now();
  while (!done() && bench::Seconds(start, Clock::now()) < timeout_s) {
    std::this_thread::sleep_for(Millis(50));
  }
  return bench::Seconds(start, Clock::now());
}

/// What a steady window measured: the server's CPU (% of one core) and RSS, this process's CPU.
struct Window {
  double cpu_pct = 0;
  double rss_max_mb = 0;
  double rss_end_mb = 0;
  double client_cpu_pct = 0;
  double pg_cpu_pct = -1;
  int connected_min = 0;
  long long drops = 0;
  long long heartbeats = 0;
  double seconds = 0;
};

/// Holds for `hold_s`; measures over all but the first `settle_s`.
Window Hold(Fleet& fleet, int pid, double hold_s, double settle_s) {
  Window w;
  w.connected_min = fleet.connected;
  auto start = Clock::now();
  long long drops0 = fleet.drops;
  auto track = [&] { w.connected_min = std::min(w.connected_min, fleet.connected.load()); };
  while (bench::Seconds(start, Clock::now()) < std::min(settle_s, hold_s)) {
    track();
    std::this_thread::sleep_for(Millis(100));
  }
  auto t1 = Clock::now();
  ProcSample s1 = Sample(pid);
  double c1 = bench::ProcessCpuSeconds();
  double pg1 = PostgresCpuSeconds();
  long long beats1 = fleet.heartbeats;
  w.rss_max_mb = s1.rss_mb;
  auto next_sample = t1;
  while (bench::Seconds(start, Clock::now()) < hold_s) {
    track();
    if (Clock::now() >= next_sample) {
      w.rss_max_mb = std::max(w.rss_max_mb, Sample(pid).rss_mb);
      next_sample += std::chrono::seconds(1);
    }
    std::this_thread::sleep_for(Millis(100));
  }
  auto t2 = Clock::now();
  ProcSample s2 = Sample(pid);
  w.seconds = bench::Seconds(t1, t2);
  w.cpu_pct = (s2.cpu_s - s1.cpu_s) / w.seconds * 100;
  w.client_cpu_pct = (bench::ProcessCpuSeconds() - c1) / w.seconds * 100;
  if (pg1 >= 0) w.pg_cpu_pct = (PostgresCpuSeconds() - pg1) / w.seconds * 100;
  w.rss_end_mb = s2.rss_mb;
  w.rss_max_mb = std::max(w.rss_max_mb, s2.rss_mb);
  w.drops = fleet.drops - drops0;
  w.heartbeats = fleet.heartbeats - beats1;
  track();
  return w;
}

/// Runs the io_context on one thread until Finish().
class IoThread {
 public:
  explicit IoThread(net::io_context& ioc) : ioc_(ioc), work_(ioc.get_executor()) {
    thread_ = std::thread([this] {
      ioc_.run();
      done_ = true;
    });
  }
  ~IoThread() {
    if (thread_.joinable()) Finish();
  }
  void Finish() {
    work_.reset();
    for (int i = 0; i < 100 && !done_; ++i) std::this_thread::sleep_for(Millis(20));
    ioc_.stop();
    thread_.join();
  }

 private:
  net::io_context& ioc_;
  net::executor_work_guard<net::io_context::executor_type> work_;
  std::atomic<bool> done_{false};
  std::thread thread_;
};

void StopFleet(Fleet& fleet) {
  fleet.StopAll();
  WaitFor([&] { return fleet.live_conns == 0; }, 10);
}

Settings ReadSettings(int argc, char** argv) {
  Settings s;
  s.sessions = static_cast<int>(EnvNumber("UNIDESK_BENCH_SESSIONS", s.sessions));
  if (argc > 1) s.sessions = std::atoi(argv[1]);
  if (argc > 2 || s.sessions <= 0) {
    throw std::runtime_error(
        "usage: bench_nodes [N]   (environment: UNIDESK_BENCH_HOLD_S, UNIDESK_BENCH_HEARTBEAT_S, "
        "UNIDESK_BENCH_CEILING_S, UNIDESK_BENCH_RAMP_S, UNIDESK_BENCH_MARGIN_S, "
        "UNIDESK_BENCH_ROLES)");
  }
  s.hold_s = EnvNumber("UNIDESK_BENCH_HOLD_S", s.hold_s);
  s.heartbeat_s = EnvNumber("UNIDESK_BENCH_HEARTBEAT_S", s.heartbeat_s);
  s.ceiling_s = EnvNumber("UNIDESK_BENCH_CEILING_S", s.ceiling_s);
  s.ramp_s = EnvNumber("UNIDESK_BENCH_RAMP_S", s.ramp_s);
  s.margin_s = EnvNumber("UNIDESK_BENCH_MARGIN_S", s.margin_s);
  if (const char* r = std::getenv("UNIDESK_BENCH_ROLES"); r && *r) s.roles = r;
  s.settle_s = std::min(s.settle_s, s.hold_s / 4);
  return s;
}

std::string SelfPath() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) throw std::runtime_error("cannot read /proc/self/exe");
  return std::string(buf, static_cast<std::size_t>(n));
}

}  // namespace

int main(int argc, char** argv) try {
  if (argc == 4 && std::string(argv[1]) == "--bare-server") {
    return RunBareServer(argv[2], Millis(std::atol(argv[3])));
  }
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  signal(SIGPIPE, SIG_IGN);
  Settings st = ReadSettings(argc, argv);
  RaiseFileLimit();
  if (FileLimit() < st.sessions + 100) {
    throw std::runtime_error("RLIMIT_NOFILE is " + std::to_string(FileLimit()) + ", too low for " +
                             std::to_string(st.sessions) + " sessions");
  }
  const int n = st.sessions;
  const Millis heartbeat(static_cast<long long>(st.heartbeat_s * 1000));
  const provider::BackoffSettings backoff;  // what the nodes use (the agent's defaults)
  const double cap_s = backoff.cap.count() / 1000.0;
  char tmpl[] = "/tmp/unidesk-bench-nodes-XXXXXX";
  if (!mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
  const std::string dir = tmpl;

  std::string db = bench::FreshDatabase("bench_nodes");
  auto creds = CreateNodes(db, n);
  double load[3] = {0, 0, 0};
  getloadavg(load, 3);
  std::printf(
      "bench_nodes: %d simulated providers in this process (one Asio thread), hello then a "
      "heartbeat every %.0f s ±10 %% (first at a random point), Beast pings as the agent; "
      "backoff 1 s doubling to %.0f s, full jitter, Retry-After honoured\n",
      n, st.heartbeat_s, cap_s);
  std::printf(
      "machine: %u cores, load average %.2f %.2f %.2f; server logs in %s (removed at the "
      "end unless UNIDESK_BENCH_KEEP_LOGS is set)\n\n",
      std::thread::hardware_concurrency(), load[0], load[1], load[2], dir.c_str());

  net::io_context ioc(1);
  std::vector<std::unique_ptr<Fleet>> fleets;  // kept to the end: handlers refer to them
  IoThread io(ioc);                            // declared last: joined before the fleets go

  // Ceiling: a bare Beast server holding the same sessions.
  Window bare;
  double bare_ramp = 0;
  if (st.ceiling_s > 0) {
    std::string ready = dir + "/bare.port", log = dir + "/bare.log";
    test::ChildProcess server(
        {SelfPath(), "--bare-server", ready, std::to_string(heartbeat.count())}, {}, log);
    unsigned short port = WaitReady(server, ready, log);
    fleets.push_back(std::make_unique<Fleet>(
        ioc, tcp::endpoint(net::ip::make_address("127.0.0.1"), port), creds, heartbeat));
    Fleet& fleet = *fleets.back();
    fleet.StartAll();
    bare_ramp = WaitFor([&] { return fleet.connected >= n; }, st.ramp_s);
    bare = Hold(fleet, server.pid(), st.ceiling_s, std::min(5.0, st.ceiling_s / 4));
    std::printf(
        "ceiling: bare Beast server (one io thread, the ingress's timeouts and pings, parses every "
        "frame, no database)\n"
        "         %d sessions connected in %.1f s; over %.0f s: cpu %.1f %% of one core, rss %.1f "
        "MB "
        "(max), min connected %d, %lld heartbeats (client cpu %.1f %%)\n",
        fleet.connected.load(), bare_ramp, bare.seconds, bare.cpu_pct, bare.rss_max_mb,
        bare.connected_min, bare.heartbeats, bare.client_cpu_pct);
    StopFleet(fleet);
    server.Signal(SIGKILL);
    server.Wait();
  }

  // The ingress.
  unsigned short port = FreePort();
  std::string ready = dir + "/ingress.port", log = dir + "/ingress.log";
  std::vector<std::string> args = {test::BuildDir() + "/ingress/unidesk-server",
                                   "--db",
                                   db,
                                   "--roles",
                                   st.roles,
                                   "--public",
                                   "127.0.0.1:" + std::to_string(port),
                                   "--ready-file",
                                   ready,
                                   "--heartbeat-interval",
                                   std::to_string(heartbeat.count()) + "ms"};
  auto server = std::make_unique<test::ChildProcess>(args, std::vector<std::string>{}, log);
  WaitReady(*server, ready, log);
  fleets.push_back(std::make_unique<Fleet>(
      ioc, tcp::endpoint(net::ip::make_address("127.0.0.1"), port), creds, heartbeat));
  Fleet& fleet = *fleets.back();
  double ramp_cpu0 = Sample(server->pid()).cpu_s, ramp_pg0 = PostgresCpuSeconds(),
         ramp_client0 = bench::ProcessCpuSeconds();
  fleet.StartAll();
  double ramp = WaitFor([&] { return fleet.connected >= n; }, st.ramp_s);
  long long ramp_503 = fleet.busy_503;
  auto ramp_hello = fleet.TakeHelloLatencies();
  double ramp_cpu = (Sample(server->pid()).cpu_s - ramp_cpu0) / ramp * 100,
         ramp_pg = (PostgresCpuSeconds() - ramp_pg0) / ramp * 100,
         ramp_client = (bench::ProcessCpuSeconds() - ramp_client0) / ramp * 100;
  std::printf(
      "ingress: unidesk-server --roles %s on 127.0.0.1:%u (defaults: 1 io thread, 4 db threads, "
      "accepts 500/s burst 1000)\n"
      "         ramp: %d of %d connected in %.1f s (%lld attempts, %lld answered 503, %lld "
      "failed); "
      "hello -> welcome p50 %.1f ms, p99 %.1f ms\n"
      "         cpu during the ramp: ingress %.1f %%, postgres %.1f %%, client %.1f %% (of one "
      "core)\n",
      st.roles.c_str(), port, fleet.connected.load(), n, ramp, fleet.attempts.load(), ramp_503,
      fleet.failed.load(), bench::Percentile(ramp_hello, 50), bench::Percentile(ramp_hello, 99),
      ramp_cpu, ramp_pg, ramp_client);
  ProcSample after_ramp = Sample(server->pid());
  Window w = Hold(fleet, server->pid(), st.hold_s, st.settle_s);
  long long fresh = bench::Scalar(
      db,
      "SELECT count(*) FROM node_liveness WHERE session_id IS NOT NULL AND last_seen_at > "
      "now() - interval '" +
          std::to_string(heartbeat.count() * 11 / 10 + 1000) + " ms'");
  std::printf(
      "         steady, %.0f s (after %.0f s settling): cpu %.1f %% of one core, rss %.1f MB max "
      "(%.1f MB at the end; peak since start %.1f MB); client cpu %.1f %%, postgres cpu %.1f %%\n"
      "         connected at least %d throughout, %lld sessions dropped, %lld heartbeats sent "
      "(%.0f/s); node_liveness rows seen in the last interval: %lld\n",
      w.seconds, st.settle_s, w.cpu_pct, w.rss_max_mb, w.rss_end_mb,
      std::max(after_ramp.hwm_mb, Sample(server->pid()).hwm_mb), w.client_cpu_pct, w.pg_cpu_pct,
      w.connected_min, w.drops, w.heartbeats, w.heartbeats / w.seconds, fresh);

  // Restart: SIGTERM, wait for the exit, start again on the same port.
  long long busy0 = fleet.busy_503, failed0 = fleet.failed, attempts0 = fleet.attempts;
  long long away0 = fleet.closed_going_away, other0 = fleet.closed_other, cut0 = fleet.cut;
  double back_pg0 = PostgresCpuSeconds(), back_client0 = bench::ProcessCpuSeconds();
  auto t0 = Clock::now();
  fleet.MarkRestart(t0);
  server->Signal(SIGTERM);
  int code = server->Wait();
  auto t_exit = Clock::now();
  std::remove(ready.c_str());
  server = std::make_unique<test::ChildProcess>(args, std::vector<std::string>{}, log);
  WaitReady(*server, ready, log);
  auto t_ready = Clock::now();
  double deadline_s = cap_s + st.margin_s;
  WaitFor([&] { return fleet.back >= n; }, deadline_s - bench::Seconds(t0, Clock::now()));
  double back_s = bench::Seconds(t0, Clock::now());
  double back_cpu = Sample(server->pid()).cpu_s / bench::Seconds(t_exit, Clock::now()) * 100,
         back_pg = (PostgresCpuSeconds() - back_pg0) / back_s * 100,
         back_client = (bench::ProcessCpuSeconds() - back_client0) / back_s * 100;
  std::vector<Return> returns = fleet.Returns(t0);
  auto restart_hello = fleet.TakeHelloLatencies();
  std::vector<double> back;
  int lost = 0;
  for (const Return& r : returns) {
    if (r.seconds < 0 || r.seconds > deadline_s) {
      ++lost;
    } else {
      back.push_back(r.seconds);
    }
  }
  double ready_s = bench::Seconds(t0, t_ready);
  int first_second = 0;
  std::vector<int> buckets(static_cast<std::size_t>(deadline_s / 5) + 1, 0);
  std::vector<int> seconds(static_cast<std::size_t>(deadline_s) + 1, 0);
  for (double t : back) {
    if (t <= ready_s + 1) ++first_second;
    buckets[static_cast<std::size_t>(t / 5)]++;
    seconds[static_cast<std::size_t>(t)]++;
  }
  int busiest = *std::max_element(seconds.begin(), seconds.end());
  double p50 = bench::Percentile(back, 50), p90 = bench::Percentile(back, 90),
         p99 = bench::Percentile(back, 99);
  double max_s = back.empty() ? 0 : back.back();  // sorted by Percentile
  std::printf(
      "restart: SIGTERM -> exited (code %d) in %.2f s -> listening again at %.2f s; the sessions "
      "ended with 1001 (going away): %lld, another close code: %lld, without a close frame: %lld\n"
      "         back within cap + margin (%.0f s): %zu of %d; reconnect (SIGTERM -> welcome) "
      "p50 %.2f s  p90 %.2f s  p99 %.2f s  max %.2f s\n"
      "         %lld attempts, %lld answered 503, %lld failed (refused while down); back in the "
      "first second after listening: %d (%.1f %%); busiest second: %d\n"
      "         welcomes per 5 s since SIGTERM:",
      code, bench::Seconds(t0, t_exit), ready_s, fleet.closed_going_away - away0,
      fleet.closed_other - other0, fleet.cut - cut0, deadline_s, back.size(), n, p50, p90, p99,
      max_s, fleet.attempts - attempts0, fleet.busy_503 - busy0, fleet.failed - failed0,
      first_second, back.empty() ? 0.0 : 100.0 * first_second / back.size(), busiest);
  std::size_t last = buckets.size();
  while (last > 0 && buckets[last - 1] == 0) --last;
  for (std::size_t i = 0; i < last; ++i) std::printf(" %d", buckets[i]);
  std::printf(
      "\n         hello -> welcome p50 %.1f ms, p99 %.1f ms; cpu until all were back: new ingress "
      "%.1f %%, postgres %.1f %%, client %.1f %%\n",
      bench::Percentile(restart_hello, 50), bench::Percentile(restart_hello, 99), back_cpu, back_pg,
      back_client);
  {
    // Why the slowest were slow: attempts and 503s of the slowest 1 % against everyone's.
    std::sort(returns.begin(), returns.end(), [](const Return& a, const Return& b) {
      return (a.seconds < 0 ? 1e9 : a.seconds) < (b.seconds < 0 ? 1e9 : b.seconds);
    });
    std::size_t tail = std::max<std::size_t>(1, returns.size() / 100);
    double all_att = 0, all_busy = 0, tail_att = 0, tail_busy = 0;
    int over_cap = 0;
    for (std::size_t i = 0; i < returns.size(); ++i) {
      all_att += returns[i].attempts;
      all_busy += returns[i].busy;
      if (i >= returns.size() - tail) {
        tail_att += returns[i].attempts;
        tail_busy += returns[i].busy;
      }
      if (returns[i].seconds < 0 || returns[i].seconds > cap_s) ++over_cap;
    }
    std::printf(
        "         attempts per node until back: %.2f on average, %.2f of them answered 503; the "
        "slowest 1 %% (%zu): %.2f and %.2f; back after more than the %.0f s cap: %d\n",
        all_att / returns.size(), all_busy / returns.size(), tail, tail_att / tail,
        tail_busy / tail, cap_s, over_cap);
  }
  if (fleet.refused_tokens > 0 || fleet.errors > 0) {
    std::printf("         refused tokens: %lld, error messages from the server: %lld\n",
                fleet.refused_tokens.load(), fleet.errors.load());
  }
  std::printf(
      "ceiling beside it: bare server cpu %.1f %%, rss %.1f MB for the same sessions; "
      "ingress / bare: cpu %.1fx, rss %.1fx\n",
      bare.cpu_pct, bare.rss_max_mb, bare.cpu_pct > 0 ? w.cpu_pct / bare.cpu_pct : 0,
      bare.rss_max_mb > 0 ? w.rss_max_mb / bare.rss_max_mb : 0);

  StopFleet(fleet);
  server->Signal(SIGTERM);
  server->Wait();
  io.Finish();

  bool all = w.connected_min == n && w.drops == 0;
  bool spread = back.size() > 0 && first_second < static_cast<int>(back.size());
  std::printf(
      "\ntargets: all connected %s; cpu < 50 %% %s; rss < 1 GiB %s; all back within the %.0f s "
      "cap %s; spread (not all in the first second) %s; none lost %s\n",
      all ? "met" : "MISSED", w.cpu_pct < 50 ? "met" : "MISSED",
      w.rss_max_mb < 1024 ? "met" : "MISSED", cap_s, lost == 0 && max_s <= cap_s ? "met" : "MISSED",
      spread ? "met" : "MISSED", lost == 0 ? "met" : "MISSED");
  if (!std::getenv("UNIDESK_BENCH_KEEP_LOGS")) bench::Run("rm -rf " + bench::ShellQuote(dir));
  std::cout << bench::JsonLine("nodes")
                   .Num("sessions", n)
                   .Num("connected", w.connected_min)
                   .Num("ingress_cpu_pct", w.cpu_pct, 1)
                   .Num("ingress_rss_mb", w.rss_max_mb, 1)
                   .Num("reconnect_p50_s", p50, 2)
                   .Num("reconnect_p99_s", p99, 2)
                   .Num("lost", lost)
                   .Done()
            << std::endl;
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_nodes: %s\n", e.what());
  return 1;
}
