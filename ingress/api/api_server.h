#pragma once
// The `api` role's listener: HTTP/1.1 with keep-alive on an internal address (127.0.0.1:8471 by
// default), one socket thread, the routes (routes.h) on a pool of worker threads so a request
// that waits for Postgres never holds up the others.

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "core/log.h"
#include "ingress/api/routes.h"

namespace unidesk::ingress::api {

struct ApiSettings {
  std::string address = "127.0.0.1";
  unsigned short port = 8471;
  int workers = 8;
  std::size_t max_body_bytes = 256 * 1024;
};

/// Requests taken and not yet answered; Stop waits for them.
class InFlight {
 public:
  void Add();
  void Done();
  void WaitIdle();

 private:
  std::mutex mu_;
  std::condition_variable idle_;
  int count_ = 0;
};

class ApiServer {
 public:
  ApiServer(ApiSettings settings, ApiDeps deps, core::LoggerPtr log);
  ~ApiServer();
  /// Binds and starts serving; throws boost::system::system_error when the address is taken.
  void Start();
  /// Stops accepting, waits until every request taken has been answered (a submission waits for
  /// its commit, so the event store must still run), then closes.
  void Stop();
  unsigned short port() const { return port_; }

 private:
  class Listener;
  ApiSettings settings_;
  ApiDeps deps_;
  core::LoggerPtr log_;
  boost::asio::io_context ioc_;
  /// Keeps ioc_ running while answers are still to come after the acceptor closed.
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work_;
  boost::asio::thread_pool workers_;
  std::shared_ptr<Listener> listener_;
  InFlight in_flight_;
  std::thread io_thread_;
  unsigned short port_ = 0;
};

}  // namespace unidesk::ingress::api
