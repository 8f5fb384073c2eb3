#include "ingress/provider_ingress/provider_session.h"

#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>

#include "core/ids.h"
#include "ingress/provider_ingress/heartbeat_batcher.h"

namespace unidesk::ingress {

namespace beast = boost::beast;
namespace websocket = beast::websocket;
namespace net = boost::asio;
namespace proto = core::protocol;
using proto::CloseCode;

ProviderSession::ProviderSession(beast::tcp_stream&& stream, IngressContext& ctx, NodeIdentity id,
                                 std::string remote)
    : ws_(std::move(stream)),
      ctx_(ctx),
      id_(std::move(id)),
      remote_(std::move(remote)),
      session_(core::NewUuid()),
      limiter_(ctx.settings.messages_per_s, ctx.settings.message_burst) {}

void ProviderSession::Start(beast::http::request<beast::http::string_body> request) {
  beast::get_lowest_layer(ws_).expires_never();  // the websocket timeouts take over
  websocket::stream_base::timeout t;
  t.handshake_timeout = ctx_.settings.handshake_timeout;
  t.idle_timeout = ctx_.settings.idle_timeout;
  t.keep_alive_pings = true;
  ws_.set_option(t);
  ws_.read_message_max(proto::kMaxFrameBytes);
  ws_.set_option(websocket::stream_base::decorator([](websocket::response_type& res) {
    res.set(beast::http::field::server, "unidesk-ingress");
  }));
  ws_.async_accept(request,
                   beast::bind_front_handler(&ProviderSession::OnAccept, shared_from_this()));
}

void ProviderSession::OnAccept(beast::error_code ec) {
  if (ec) {
    ctx_.log->info("node {}: upgrade failed: {}", id_.node, ec.message());
    return;
  }
  ws_.text(true);
  DoRead();
}

void ProviderSession::DoRead() {
  ws_.async_read(buffer_, beast::bind_front_handler(&ProviderSession::OnRead, shared_from_this()));
}

void ProviderSession::OnRead(beast::error_code ec, std::size_t) {
  if (ec) return Ended(ec);
  std::string text = beast::buffers_to_string(buffer_.data());
  buffer_.consume(buffer_.size());
  if (state_ == State::kClosing) return DoRead();  // drain until the peer's close frame
  if (!ws_.got_text()) {
    Reject("binary_frame", "frames must be UTF-8 JSON text", "", CloseCode::kBadMessage);
    return DoRead();
  }
  if (!limiter_.Take(TokenBucket::Clock::now())) {
    Reject("rate_limited",
           "more than " + std::to_string(static_cast<int>(ctx_.settings.messages_per_s)) +
               " messages a second (burst " +
               std::to_string(static_cast<int>(ctx_.settings.message_burst)) + ")",
           "", CloseCode::kRateLimited);
    return DoRead();
  }
  if (Handle(text)) DoRead();
}

bool ProviderSession::Handle(const std::string& text) {
  auto parsed = proto::ParseProviderMessage(text);
  if (!parsed.ok()) {
    const auto& err = parsed.error();
    if (err.code == proto::ParseError::kUnknownType && state_ == State::kReady) {
      // Forward compatibility: an unknown type is answered and recorded, the session goes on.
      Reject("unknown_type", "unknown message type '" + err.message + "'", "", CloseCode{0});
      return true;
    }
    Reject(proto::ParseErrorName(err.code), err.message, "", CloseCode::kBadMessage);
    return true;
  }
  auto& msg = parsed.value();
  if (auto* hello = std::get_if<proto::Hello>(&msg)) {
    if (state_ != State::kAwaitHello) {
      Reject("hello_twice", "hello was already received on this session", hello->id,
             CloseCode::kProtocolViolation);
      return true;
    }
    if (hello->protocol_version != proto::kVersion) {
      Reject("unsupported_protocol",
             "protocol version " + std::to_string(hello->protocol_version) +
                 " is not spoken here; this server speaks " + std::to_string(proto::kVersion),
             hello->id, CloseCode::kUnsupportedVersion);
      return true;
    }
    if (hello->node != id_.node) {
      Reject("node_mismatch",
             "hello names node '" + hello->node + "' but the token belongs to '" + id_.node + "'",
             hello->id, CloseCode::kBadMessage);
      return true;
    }
    OnHello(std::move(*hello));
    return false;
  }
  if (state_ != State::kReady) {
    Reject("before_hello", "the first message of a session must be hello", "",
           CloseCode::kProtocolViolation);
    return true;
  }
  if (auto* beat = std::get_if<proto::Heartbeat>(&msg)) {
    ctx_.heartbeats.Add({id_.node, session_, proto::ToJson(beat->health)});
    return true;
  }
  OnReport(std::move(std::get<proto::Report>(msg)));
  return false;
}

void ProviderSession::OnHello(proto::Hello hello) {
  state_ = State::kHelloPending;
  net::post(ctx_.db, [self = shared_from_this(), hello = std::move(hello)] {
    auto recorded = self->ctx_.store.RecordHello(self->id_, hello, self->session_, self->remote_);
    net::dispatch(self->ws_.get_executor(), [self, hello, recorded = std::move(recorded)] {
      if (self->state_ == State::kClosing) return self->DoRead();
      if (!recorded.ok() && recorded.error().code == StoreError::kRefused) {
        self->Reject("hello_refused", recorded.error().message, hello.id, CloseCode::kBadMessage);
        return self->DoRead();
      }
      if (!recorded.ok()) {
        self->ctx_.log->warn("node {}: hello not recorded: {}", self->id_.node,
                             recorded.error().message);
        self->Send(proto::Write(proto::Error{hello.id, "unavailable", recorded.error().message}));
        self->CloseOnStrand(CloseCode::kTryAgainLater, "cannot record the hello; retry later");
        return self->DoRead();
      }
      self->connected_position_ = recorded.value().position;
      self->live_ = true;
      self->state_ = State::kReady;
      if (auto old = self->ctx_.registry.Put(self->id_.node, self)) {
        old->Close(CloseCode::kSuperseded, "a newer session of this node took over");
      }
      self->ctx_.log->info(
          "node {} connected from {} (session {}{})", self->id_.node, self->remote_, self->session_,
          recorded.value().superseded ? ", superseding " + *recorded.value().superseded : "");
      self->Send(proto::Write(
          proto::Welcome{hello.id, self->session_, self->id_.node,
                         static_cast<std::int64_t>(self->ctx_.settings.heartbeat_interval.count()),
                         UNIDESK_VERSION}));
      self->CatchUp(hello.running_tasks_json);
      self->DoRead();
    });
  });
}

void ProviderSession::OnReport(proto::Report report) {
  if (report.kind == "task") {
    // Applied in a group with what other sessions report meanwhile (task_report_queue.h).
    TaskReportIn in{id_.node, session_, report};
    ctx_.reports.Submit(std::move(in), [self = shared_from_this(),
                                        report = std::move(report)](ReportResult applied) {
      net::dispatch(self->ws_.get_executor(), [self, report, applied = std::move(applied)] {
        self->OnReportApplied(report, applied);
      });
    });
    return;
  }
  net::post(ctx_.db, [self = shared_from_this(), report = std::move(report)] {
    ReportResult applied = ReportApplied{};
    if (report.kind == "log") {
      applied = self->ctx_.tasks.RecordLogReport(self->id_.node, self->session_, report);
    } else {
      auto r = self->ctx_.store.RecordReport(self->id_.node, self->session_, report);
      if (r.ok()) {
        applied = ReportApplied{r.value(), std::nullopt};
      } else {
        applied = r.error();
      }
    }
    net::dispatch(self->ws_.get_executor(), [self, report, applied = std::move(applied)] {
      self->OnReportApplied(report, applied);
    });
  });
}

void ProviderSession::OnReportApplied(const proto::Report& report, const ReportResult& applied) {
  if (!applied.ok()) {
    // Not acknowledged: the agent keeps it in its outbox and sends it again.
    Send(proto::Write(proto::Error{report.id, "unavailable", applied.error().message}));
    CloseOnStrand(CloseCode::kTryAgainLater, "cannot record reports; retry later");
  } else {
    Send(proto::Write(proto::Ack{report.outbox, report.seq, applied.value().rejected}));
    if (applied.value().stop) Send(proto::Write(*applied.value().stop));
  }
  DoRead();
}

void ProviderSession::CatchUp(std::string running_tasks_json) {
  net::post(ctx_.db, [self = shared_from_this(), running = std::move(running_tasks_json)] {
    auto frames = self->ctx_.tasks.CatchUp(self->id_.node, running);
    if (!frames.ok()) {
      // The session goes on; what was not sent now is sent after the next hello, and an
      // assignment nobody acknowledges is moved by the scheduler.
      self->ctx_.log->warn("node {}: task catch-up not sent: {}", self->id_.node,
                           frames.error().message);
      return;
    }
    for (auto& f : frames.value()) self->Send(std::move(f));
  });
}

void ProviderSession::Reject(const std::string& reason, const std::string& detail,
                             const std::string& reply_to, CloseCode code) {
  ctx_.log->info("node {}: rejected ({}): {}", id_.node, reason, detail);
  Rejection r{reason, detail, static_cast<int>(code), remote_, id_.node, session_};
  RecordRejection(ctx_, r);
  Send(proto::Write(proto::Error{reply_to, reason, detail}));
  if (code != CloseCode{0}) CloseOnStrand(code, reason);
}

void ProviderSession::Send(std::string text) {
  net::dispatch(ws_.get_executor(), [self = shared_from_this(), text = std::move(text)]() mutable {
    Outgoing o;
    o.text = std::move(text);
    self->Enqueue(std::move(o));
  });
}

void ProviderSession::Close(CloseCode code, std::string reason) {
  net::dispatch(ws_.get_executor(), [self = shared_from_this(), code, reason]() mutable {
    self->CloseOnStrand(code, std::move(reason));
  });
}

void ProviderSession::CloseOnStrand(CloseCode code, std::string reason) {
  if (state_ == State::kClosing || ended_) return;
  state_ = State::kClosing;
  close_code_ = static_cast<int>(code);
  close_reason_ = reason;
  Outgoing o;
  o.close = true;
  o.reason.code = static_cast<std::uint16_t>(code);
  o.reason.reason = reason;
  Enqueue(std::move(o));
}

void ProviderSession::Enqueue(Outgoing o) {
  if (ended_ || dead_) return;
  if (!o.close && queue_.size() >= ctx_.settings.send_queue_max) {
    // A node that does not read its socket must not make the server buffer without bound.
    ctx_.log->warn("node {}: send queue full; closing", id_.node);
    queue_.clear();
    dead_ = true;  // nothing more is queued; the write in flight and the read fail and end it
    beast::get_lowest_layer(ws_).close();
    return;
  }
  queue_.push_back(std::move(o));
  if (!writing_) DoWrite();
}

void ProviderSession::DoWrite() {
  if (queue_.empty()) {
    writing_ = false;
    return;
  }
  writing_ = true;
  Outgoing& front = queue_.front();
  if (front.close) {
    ws_.async_close(front.reason,
                    [self = shared_from_this()](beast::error_code ec) { self->OnWrite(ec, 0); });
  } else {
    ws_.async_write(net::buffer(front.text),
                    beast::bind_front_handler(&ProviderSession::OnWrite, shared_from_this()));
  }
}

void ProviderSession::OnWrite(beast::error_code ec, std::size_t) {
  if (ec) {
    queue_.clear();
    writing_ = false;
    return;  // the read side sees the failure and ends the session
  }
  bool was_close = queue_.front().close;
  queue_.pop_front();
  if (was_close) {
    queue_.clear();
    writing_ = false;
    return;
  }
  DoWrite();
}

void ProviderSession::Ended(beast::error_code ec) {
  if (ended_) return;
  ended_ = true;
  int code = close_code_;
  std::string reason = close_reason_;
  bool agent_stopped = false;
  if (code == 0) {
    if (ec == websocket::error::closed) {
      code = ws_.reason().code;
      reason = "the agent closed the session (" + std::to_string(code) +
               (ws_.reason().reason.empty() ? "" : ": " + std::string(ws_.reason().reason)) + ")";
      agent_stopped = code == static_cast<int>(CloseCode::kGoingAway);
    } else if (ec == websocket::error::message_too_big) {
      code = static_cast<int>(CloseCode::kTooBig);
      reason = "frame_too_big";
      Rejection r{reason,   "a frame over " + std::to_string(proto::kMaxFrameBytes) + " bytes",
                  code,     remote_,
                  id_.node, session_};
      RecordRejection(ctx_, r);
    } else if (ec == websocket::error::bad_frame_payload) {
      code = static_cast<int>(CloseCode::kInvalidPayload);
      reason = "invalid_utf8";
      Rejection r{reason,  "a text frame that is not valid UTF-8", code, remote_, id_.node,
                  session_};
      RecordRejection(ctx_, r);
    } else if (ec == beast::error::timeout) {
      code = static_cast<int>(CloseCode::kSilent);
      reason = "silent: no frame and no pong for " +
               std::to_string(ctx_.settings.idle_timeout.count()) + " ms";
    } else {
      code = 1006;
      reason = "connection lost: " + ec.message();
    }
  }
  ctx_.registry.Remove(id_.node, this);
  beast::error_code ignored;
  beast::get_lowest_layer(ws_).socket().close(ignored);
  if (!live_) return;
  ctx_.log->info("node {}: session {} ended: {}", id_.node, session_, reason);
  if (ctx_.stopping) return;  // a stopping server leaves liveness to the monitor's grace
  net::post(ctx_.db, [self = shared_from_this(), code, reason, agent_stopped] {
    self->ctx_.store.RecordDisconnect(self->id_.node, self->session_, code, reason, agent_stopped);
  });
}

}  // namespace unidesk::ingress
