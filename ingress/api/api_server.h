#pragma once
// The `api` role's listener: HTTP/1.1 with keep-alive on an internal address (127.0.0.1:8471 by
// default), one socket thread, the routes (routes.h) on a pool of worker threads so a request
// that waits for Postgres never holds up the others.

#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <memory>
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

class ApiServer {
 public:
  ApiServer(ApiSettings settings, ApiDeps deps, core::LoggerPtr log);
  ~ApiServer();
  /// Binds and starts serving; throws boost::system::system_error when the address is taken.
  void Start();
  void Stop();
  unsigned short port() const { return port_; }

 private:
  class Listener;
  ApiSettings settings_;
  ApiDeps deps_;
  core::LoggerPtr log_;
  boost::asio::io_context ioc_;
  boost::asio::thread_pool workers_;
  std::shared_ptr<Listener> listener_;
  std::thread io_thread_;
  unsigned short port_ = 0;
};

}  // namespace unidesk::ingress::api
