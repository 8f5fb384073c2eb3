#pragma once
// One provider's WebSocket session: a strand of its own, one write in flight, a bounded send
// queue (Beast's chat-multi shape). Every message is parsed, checked and turned into a store call
// on the database threads; answers come back on the strand.

#include <atomic>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <deque>
#include <memory>
#include <string>

#include "core/protocol.h"
#include "ingress/provider_ingress/context.h"
#include "ingress/provider_ingress/sent_assignments.h"

namespace unidesk::ingress {

class ProviderSession : public std::enable_shared_from_this<ProviderSession> {
 public:
  ProviderSession(boost::beast::tcp_stream&& stream, IngressContext& ctx, NodeIdentity id,
                  std::string remote);
  /// Completes the upgrade `request` asked for.
  void Start(boost::beast::http::request<boost::beast::http::string_body> request);
  /// Both thread-safe.
  void Send(std::string text);
  void Close(core::protocol::CloseCode code, std::string reason);
  /// True the first time this session is to send (task, attempt); thread-safe. An assignment
  /// can come twice: in-process from this copy's scheduler, then from the bus.
  bool ClaimAssignment(const std::string& task, std::int64_t attempt) {
    return sent_.Claim(task, attempt);
  }

  const std::string& node() const { return id_.node; }
  const std::string& session_id() const { return session_; }
  /// Position of the events that made this session live (0 before hello).
  std::int64_t connected_position() const { return connected_position_; }

 private:
  struct Outgoing {
    std::string text;
    bool close = false;
    boost::beast::websocket::close_reason reason;
  };
  enum class State { kAwaitHello, kHelloPending, kReady, kClosing };

  void OnAccept(boost::beast::error_code ec);
  void DoRead();
  void OnRead(boost::beast::error_code ec, std::size_t bytes);
  /// Returns whether to keep reading now (false while a store call is pending).
  bool Handle(const std::string& text);
  void OnHello(core::protocol::Hello hello);
  void OnReport(core::protocol::Report report);
  /// Acknowledges the report (or says it could not be recorded) and reads the next message.
  void OnReportApplied(const core::protocol::Report& report, const ReportResult& applied);
  /// After welcome: the node is sent its placed attempts and told to stop stale ones.
  void CatchUp(std::string running_tasks_json);
  /// Records `reason` as ingress.rejected; sends an error frame; closes with `code` unless 0.
  void Reject(const std::string& reason, const std::string& detail, const std::string& reply_to,
              core::protocol::CloseCode code);
  void CloseOnStrand(core::protocol::CloseCode code, std::string reason);
  void Enqueue(Outgoing o);
  void DoWrite();
  void OnWrite(boost::beast::error_code ec, std::size_t bytes);
  void Ended(boost::beast::error_code ec);

  boost::beast::websocket::stream<boost::beast::tcp_stream> ws_;
  boost::beast::flat_buffer buffer_;
  IngressContext& ctx_;
  NodeIdentity id_;
  std::string remote_;
  std::string session_;
  std::atomic<std::int64_t> connected_position_{0};
  State state_ = State::kAwaitHello;
  bool live_ = false;  // hello recorded: the liveness row names this session
  TokenBucket limiter_;
  std::deque<Outgoing> queue_;
  bool writing_ = false;
  bool ended_ = false;
  bool dead_ = false;   // the send queue overflowed and the socket was closed
  int close_code_ = 0;  // what the server closed with, when it did
  std::string close_reason_;
  SentAssignments sent_;
};

}  // namespace unidesk::ingress
