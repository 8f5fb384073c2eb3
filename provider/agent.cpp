#include "provider/agent.h"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <deque>
#include <thread>

#include "core/ids.h"
#include "core/protocol.h"
#include "provider/host_hygiene.h"

namespace unidesk::provider {

namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace net = boost::asio;
namespace proto = core::protocol;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;

/// One connection attempt and, when it succeeds, the session over it.
class Agent::Session : public std::enable_shared_from_this<Session> {
 public:
  struct Outcome {
    bool joined = false;
    Clock::duration connected_for{};
    Millis retry_after{0};
    std::optional<AgentExit> fatal;
  };

  explicit Session(Agent& agent)
      : agent_(agent),
        resolver_(agent.ioc_),
        ws_(agent.ioc_),
        heartbeat_(agent.ioc_),
        rescan_(agent.ioc_),
        pump_(agent.ioc_) {}

  void Start() {
    if (closing_) return;
    resolver_.async_resolve(agent_.config_.host, agent_.config_.port,
                            beast::bind_front_handler(&Session::OnResolve, shared_from_this()));
  }

  /// The agent is stopping: say goodbye (1001) so the server marks the node offline at once;
  /// or, when its tasks keep running for the next agent process, 1012 (service restart): the
  /// node stays placed until the server's offline window.
  void Close() {
    if (closing_) return;
    closing_ = true;
    resolver_.cancel();
    heartbeat_.cancel();
    rescan_.cancel();
    pump_.cancel();
    if (!open_) {
      beast::get_lowest_layer(ws_).close();
      return;
    }
    Enqueue("", true);
  }

  const Outcome& outcome() const { return outcome_; }
  /// A report stored by a worker thread: sent now when the session is joined.
  void Offer(const OutboxEntry& e) { QueueReport(e); }

 private:
  AgentConfig& config() { return agent_.config_; }
  core::LoggerPtr& log() { return agent_.log_; }

  void OnResolve(beast::error_code ec, tcp::resolver::results_type results) {
    if (ec) return Fail("cannot resolve " + config().host + ": " + ec.message());
    beast::get_lowest_layer(ws_).expires_after(std::chrono::seconds(10));
    beast::get_lowest_layer(ws_).async_connect(
        results, beast::bind_front_handler(&Session::OnConnect, shared_from_this()));
  }

  void OnConnect(beast::error_code ec, tcp::endpoint) {
    if (closing_) return;
    if (ec)
      return Fail("cannot connect to " + config().host + ":" + config().port + ": " + ec.message());
    beast::get_lowest_layer(ws_).expires_never();
    // Reports are small and due now; with Nagle a report waits for the server's delayed ACK
    // of the one before (up to 40 ms).
    beast::error_code ignored;
    beast::get_lowest_layer(ws_).socket().set_option(tcp::no_delay(true), ignored);
    websocket::stream_base::timeout t;
    t.handshake_timeout = std::chrono::seconds(10);
    t.idle_timeout = std::chrono::seconds(30);  // a dead server link is found by pings
    t.keep_alive_pings = true;
    ws_.set_option(t);
    ws_.read_message_max(proto::kMaxFrameBytes);
    std::string token = config().token;
    ws_.set_option(websocket::stream_base::decorator([token](websocket::request_type& req) {
      req.set(http::field::authorization, "Bearer " + token);
      req.set(http::field::user_agent, std::string("unidesk-provider/") + UNIDESK_VERSION);
    }));
    ws_.async_handshake(response_, config().host + ":" + config().port, config().path,
                        beast::bind_front_handler(&Session::OnHandshake, shared_from_this()));
  }

  void OnHandshake(beast::error_code ec) {
    if (ec) {
      Teardown();  // the stream's own timers would keep the loop alive otherwise
      unsigned status = response_.result_int();
      std::string body = response_.body();
      while (!body.empty() && body.back() == '\n') body.pop_back();
      if (status == 401 || status == 403) {
        log()->error("the server refused this node's token ({}): {}", status, body);
        outcome_.fatal = AgentExit::kTokenRefused;
        return;
      }
      if (status == 503) {
        auto it = response_.find(http::field::retry_after);
        int seconds = it == response_.end() ? 5 : std::atoi(std::string(it->value()).c_str());
        outcome_.retry_after = Millis(std::max(1, seconds) * 1000);
        return Fail("server busy (503" + (body.empty() ? "" : ": " + body) + "), retry after " +
                    std::to_string(seconds) + " s");
      }
      return Fail("upgrade failed" + (status ? " (HTTP " + std::to_string(status) + ")" : "") +
                  ": " + ec.message());
    }
    if (closing_) return;
    open_ = true;
    connected_at_ = Clock::now();
    ws_.text(true);
    proto::Hello hello;
    hello.id = core::NewUuid();
    hello.node = config().name;
    hello.agent_version = UNIDESK_VERSION;
    hello.protocol_version = proto::kVersion;
    try {
      hello.resources = DetectResources(config().probe);
    } catch (const std::exception& e) {
      log()->error("{}", e.what());
    }
    last_resources_ = hello.resources;
    hello.labels = config().labels;
    hello.runtimes = {"docker"};
    hello.running_tasks_json = agent_.tasks_->RunningJson();
    hello.health = DetectHealth(config().probe);
    Enqueue(proto::Write(hello));
    DoRead();
  }

  void DoRead() {
    ws_.async_read(buffer_, beast::bind_front_handler(&Session::OnRead, shared_from_this()));
  }

  void OnRead(beast::error_code ec, std::size_t) {
    if (ec) return Ended(ec);
    std::string text = beast::buffers_to_string(buffer_.data());
    buffer_.consume(buffer_.size());
    auto parsed = proto::ParseServerMessage(text);
    if (!parsed.ok()) {
      log()->warn("ignoring a message from the server: {}", parsed.error().message);
    } else if (auto* w = std::get_if<proto::Welcome>(&parsed.value())) {
      OnWelcome(*w);
    } else if (auto* a = std::get_if<proto::Ack>(&parsed.value())) {
      if (a->outbox == agent_.outbox_.id()) agent_.outbox_.Ack(a->seq);
      if (!a->rejected.empty()) log()->warn("report {} was rejected: {}", a->seq, a->rejected);
    } else if (auto* e = std::get_if<proto::Error>(&parsed.value())) {
      log()->warn("the server says {}: {}", e->code, e->message);
    } else if (auto* as = std::get_if<proto::Assign>(&parsed.value())) {
      agent_.tasks_->Assign(*as);
    } else if (auto* c = std::get_if<proto::Cancel>(&parsed.value())) {
      agent_.tasks_->Cancel(*c);
    }
    DoRead();
  }

  void OnWelcome(const proto::Welcome& w) {
    outcome_.joined = true;
    interval_ = Millis(w.heartbeat_interval_ms);
    log()->info("joined as {} (session {}, heartbeat every {} ms)", w.node, w.session,
                w.heartbeat_interval_ms);
    for (const auto& e : agent_.outbox_.Pending()) QueueReport(e);
    ScheduleHeartbeat();
    ScheduleRescan();
  }

  /// Sends `e` once the session is joined, paced below the server's message rate (50 a second,
  /// burst 200, heartbeats included): a long outbox after an outage must not get the session
  /// closed for flooding.
  void QueueReport(const OutboxEntry& e) {
    if (!outcome_.joined || closing_) return;  // sent from the outbox after the next welcome
    reports_.push_back(e);
    Pump();
  }

  void Pump() {
    auto now = Clock::now();
    tokens_ = std::min(
        kReportBurst,
        tokens_ + kReportsPerSecond * std::chrono::duration<double>(now - refilled_).count());
    refilled_ = now;
    while (!reports_.empty() && tokens_ >= 1.0) {
      tokens_ -= 1.0;
      const OutboxEntry& e = reports_.front();
      Enqueue(proto::Write(
          proto::Report{core::NewUuid(), agent_.outbox_.id(), e.seq, e.kind, e.body_json}));
      reports_.pop_front();
    }
    if (reports_.empty() || pumping_) return;
    pumping_ = true;
    pump_.expires_after(std::chrono::milliseconds(25));
    pump_.async_wait([self = shared_from_this()](beast::error_code ec) {
      self->pumping_ = false;
      if (!ec && !self->closing_) self->Pump();
    });
  }

  void ScheduleHeartbeat() {
    heartbeat_.expires_after(interval_);
    heartbeat_.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (ec || self->closing_) return;
      self->Enqueue(
          proto::Write(proto::Heartbeat{core::NewUuid(), DetectHealth(self->config().probe)}));
      self->ScheduleHeartbeat();
    });
  }

  void ScheduleRescan() {
    rescan_.expires_after(config().rescan);
    rescan_.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (ec || self->closing_) return;
      try {
        auto now = DetectResources(self->config().probe);
        if (!(now == self->last_resources_)) {
          self->last_resources_ = now;
          self->log()->info("resources changed; reporting");
          self->QueueReport(self->agent_.outbox_.Add("resources", proto::ToJson(now)));
        }
      } catch (const std::exception& e) {
        self->log()->error("{}", e.what());
      }
      self->ScheduleRescan();
    });
  }

  void Enqueue(std::string text, bool close = false) {
    queue_.push_back({std::move(text), close});
    if (!writing_) DoWrite();
  }

  void DoWrite() {
    if (queue_.empty() || !open_) {
      writing_ = false;
      return;
    }
    writing_ = true;
    if (queue_.front().second) {
      auto goodbye =
          config().keep_tasks_on_stop
              ? websocket::close_reason(websocket::close_code::service_restart, "agent restarting")
              : websocket::close_reason(websocket::close_code::going_away, "agent stopping");
      ws_.async_close(goodbye, [self = shared_from_this()](beast::error_code) {
        self->queue_.clear();
        self->writing_ = false;
      });
      return;
    }
    ws_.async_write(net::buffer(queue_.front().first),
                    [self = shared_from_this()](beast::error_code ec, std::size_t) {
                      if (ec) {
                        self->queue_.clear();
                        self->writing_ = false;
                        return;
                      }
                      self->queue_.pop_front();
                      self->DoWrite();
                    });
  }

  void Ended(beast::error_code ec) {
    open_ = false;
    Teardown();
    outcome_.connected_for = Clock::now() - connected_at_;
    if (ec == websocket::error::closed) {
      auto code = ws_.reason().code;
      std::string why(ws_.reason().reason);
      if (closing_) return;
      log()->warn("the server closed the session ({}: {})", code, why);
      if (code == static_cast<std::uint16_t>(proto::CloseCode::kUnsupportedVersion)) {
        outcome_.fatal = AgentExit::kProtocolRefused;
      }
      if (code == static_cast<std::uint16_t>(proto::CloseCode::kSuperseded)) {
        // Only another process can take this process's session: two agents share a token.
        log()->error("another agent connected with this node's token; stopping this one");
        outcome_.fatal = AgentExit::kSuperseded;
      }
      return;
    }
    if (!closing_) log()->warn("session lost: {}", ec.message());
  }

  void Teardown() {
    heartbeat_.cancel();
    rescan_.cancel();
    pump_.cancel();
    beast::error_code ignored;
    beast::get_lowest_layer(ws_).socket().close(ignored);
    // The session is over: end the loop now, not when Beast's handshake or idle timers fire.
    agent_.ioc_.stop();
  }

  void Fail(const std::string& why) {
    Teardown();
    if (!closing_) log()->warn("{}", why);
  }

  Agent& agent_;
  tcp::resolver resolver_;
  websocket::stream<beast::tcp_stream> ws_;
  websocket::response_type response_;
  beast::flat_buffer buffer_;
  net::steady_timer heartbeat_;
  net::steady_timer rescan_;
  net::steady_timer pump_;
  static constexpr double kReportsPerSecond = 40;
  static constexpr double kReportBurst = 100;
  std::deque<OutboxEntry> reports_;
  double tokens_ = kReportBurst;
  Clock::time_point refilled_ = Clock::now();
  bool pumping_ = false;
  Millis interval_{15000};
  proto::Resources last_resources_;
  std::deque<std::pair<std::string, bool>> queue_;
  bool writing_ = false;
  bool open_ = false;
  bool closing_ = false;
  Clock::time_point connected_at_{};
  Outcome outcome_;
};

Agent::Agent(AgentConfig config, core::LoggerPtr log)
    : config_(std::move(config)),
      log_(std::move(log)),
      lock_(config_.data_dir),
      outbox_(config_.data_dir + "/outbox") {
  RunnerSettings runner;
  runner.node = config_.name;
  runner.data_dir = config_.data_dir;
  runner.docker_socket = config_.probe.docker_socket;
  runner.nvidia_smi = config_.probe.nvidia_smi;
  // Fetches run as this binary's child (`git-fetch`). The kernel's link names the very binary
  // that is running, even after an upgrade replaced or removed the file.
  runner.git.helper = "/proc/self/exe";
  runner.git.stall_timeout = config_.git_stall_timeout;
  runner.build_stall_timeout = config_.build_stall_timeout;
  tasks_ = std::make_unique<TaskManager>(
      runner,
      [this](const std::string& kind, const std::string& body) {
        OutboxEntry e = outbox_.Add(kind, body);
        net::post(ioc_, [this, e] {
          if (session_) session_->Offer(e);
        });
      },
      log_);
  // Attempts whose ending waits in the outbox are over, whatever the server re-offers.
  for (const auto& e : outbox_.Pending()) {
    if (e.kind != "task") continue;
    auto r = proto::ParseTaskReport(e.body_json);
    if (r.ok() && r.value().state != "accepted" && r.value().state != "preparing" &&
        r.value().state != "running") {
      tasks_->MarkEnded(r.value().task, r.value().attempt);
    }
  }
  tasks_->Adopt();  // containers an earlier agent process left running
  tasks_->ReapOrphans();
  hygiene_ = std::thread([this] { Hygiene(); });
}

Agent::~Agent() {
  {
    std::lock_guard<std::mutex> lock(hygiene_mu_);
    hygiene_stop_ = true;
  }
  hygiene_cv_.notify_all();
  if (hygiene_.joinable()) hygiene_.join();
  // Workers post to ioc_ and use the outbox: they end before either goes.
  tasks_.reset();
}

void Agent::Hygiene() {
  HostHygiene hygiene(config_.data_dir, config_.probe.docker_socket, config_.hygiene, log_);
  std::unique_lock<std::mutex> lock(hygiene_mu_);
  while (!hygiene_cv_.wait_for(lock, config_.hygiene_interval, [this] { return hygiene_stop_; })) {
    lock.unlock();
    try {
      tasks_->ReapOrphans();
      // In use is read before the inventory: an attempt starting in between has not touched
      // anything old yet, and what it creates is newer than anything collected first.
      auto report = hygiene.Collect(tasks_->InUse());
      if (report.removed > 0) {
        log_->info("host hygiene: {} items removed, {} MB freed", report.removed,
                   report.freed_bytes >> 20);
      }
    } catch (const std::exception& e) {
      log_->warn("host hygiene: {}", e.what());
    }
    lock.lock();
  }
}

AgentExit Agent::Run() {
  Backoff backoff(config_.backoff);
  while (!stopping_) {
    session_ = std::make_shared<Session>(*this);
    ioc_.restart();
    net::post(ioc_, [s = session_] { s->Start(); });
    ioc_.run();
    Session::Outcome out = session_->outcome();
    session_.reset();
    if (out.fatal) {
      tasks_->Shutdown("the agent stopped");
      return *out.fatal;
    }
    if (stopping_) break;
    if (out.joined) {
      backoff.SessionEnded(std::chrono::duration_cast<Millis>(out.connected_for));
    }
    Millis delay = backoff.Next(out.retry_after);
    log_->info("reconnecting in {:.1f} s (attempt {})", delay.count() / 1000.0, backoff.failures());
    auto until = Clock::now() + delay;
    while (!stopping_ && Clock::now() < until) std::this_thread::sleep_for(Millis(20));
  }
  // After the goodbye: the node is offline, so the server moves these attempts anyway; or, with
  // --on-stop keep-running, running containers are left to the next agent process.
  tasks_->Shutdown("the agent stopped", config_.keep_tasks_on_stop);
  return AgentExit::kStopped;
}

void Agent::Stop() {
  stopping_ = true;
  net::post(ioc_, [this] {
    if (session_) session_->Close();
  });
}

}  // namespace unidesk::provider
