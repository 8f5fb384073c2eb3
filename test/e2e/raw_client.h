#pragma once
// A raw provider-protocol client for tests: says exactly what a test tells it to, over a real
// socket, and reports what came back. Blocking, with a 5 s read timeout.

#include <sys/socket.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <string>

#include "core/protocol.h"

namespace unidesk::test::e2e {

class RawClient {
 public:
  /// Connects and upgrades; `authorization` empty sends no header. `status` is the HTTP status of
  /// a refused upgrade (101 when accepted).
  RawClient(int port, const std::string& authorization) : ws_(ioc_) {
    boost::asio::ip::tcp::resolver resolver(ioc_);
    boost::asio::connect(ws_.next_layer(), resolver.resolve("127.0.0.1", std::to_string(port)));
    ws_.set_option(boost::beast::websocket::stream_base::decorator(
        [authorization](boost::beast::websocket::request_type& r) {
          if (!authorization.empty())
            r.set(boost::beast::http::field::authorization, authorization);
        }));
    boost::beast::websocket::response_type res;
    boost::beast::error_code ec;
    ws_.handshake(res, "127.0.0.1", core::protocol::kPath, ec);
    status = res.result_int();
    body = res.body();
    ws_.read_message_max(1 << 20);
  }
  void Send(const std::string& text, bool binary = false) {
    ws_.binary(binary);
    boost::beast::error_code ec;
    ws_.write(boost::asio::buffer(text), ec);
  }
  void Hello(const std::string& node, int version = core::protocol::kVersion,
             const std::string& running_tasks = "[]", bool docker_ok = false) {
    core::protocol::Hello h;
    h.id = "h1";
    h.node = node;
    h.agent_version = "test";
    h.protocol_version = version;
    h.running_tasks_json = running_tasks;
    h.health.docker_ok = docker_ok;
    h.resources.cpu_cores = 4;
    h.resources.memory_bytes = 8LL << 30;
    Send(core::protocol::Write(h));
  }
  /// The next text message, or "" once the session is closed (then `close_code` says how) or
  /// after 5 s without one (then `timed_out`, and the connection is closed). Asio's blocking
  /// read ignores SO_RCVTIMEO (it polls again on EAGAIN), so the deadline is an asynchronous
  /// read run for 5 s: a test waiting for a message that never comes fails instead of hanging.
  std::string Read() {
    boost::beast::flat_buffer buf;
    boost::beast::error_code ec;
    bool done = false;
    ws_.async_read(buf, [&](boost::beast::error_code e, std::size_t) {
      ec = e;
      done = true;
    });
    ioc_.restart();
    ioc_.run_for(std::chrono::seconds(5));
    if (!done) {
      timed_out = true;
      boost::system::error_code ignored;
      ws_.next_layer().close(ignored);
      ioc_.restart();
      ioc_.run();  // the read completes, aborted
      return "";
    }
    if (ec) {
      if (ec == boost::beast::websocket::error::closed) close_code = ws_.reason().code;
      return "";
    }
    return boost::beast::buffers_to_string(buf.data());
  }
  /// Reads until the session closes; returns the close code (0 when it did not close cleanly).
  int ReadUntilClosed(std::string* error_frames = nullptr) {
    for (int i = 0; i < 1000; ++i) {
      std::string m = Read();
      if (m.empty()) return close_code;
      if (error_frames) *error_frames += m + "\n";
    }
    return 0;
  }

  unsigned status = 0;
  std::string body;
  int close_code = 0;
  bool timed_out = false;

 private:
  boost::asio::io_context ioc_;
  boost::beast::websocket::stream<boost::asio::ip::tcp::socket> ws_;
};

}  // namespace unidesk::test::e2e
