#include "ingress/api/api_server.h"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "core/json.h"
#include "core/thread_name.h"

namespace unidesk::ingress::api {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

namespace {

/// One connection: read a request, answer it from a worker, repeat while kept alive.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket&& socket, const ApiSettings& settings, ApiDeps& deps,
          net::thread_pool& workers, InFlight& in_flight)
      : stream_(std::move(socket)),
        settings_(settings),
        deps_(deps),
        workers_(workers),
        in_flight_(in_flight) {}

  void Run() {
    net::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->Read(); });
  }

 private:
  void Read() {
    parser_.emplace();
    parser_->body_limit(settings_.max_body_bytes);
    stream_.expires_after(std::chrono::seconds(60));
    http::async_read(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, std::size_t) { self->OnRead(ec); });
  }

  void OnRead(beast::error_code ec) {
    if (ec == http::error::end_of_stream || ec == beast::error::timeout ||
        ec == net::error::operation_aborted || ec == net::error::connection_reset) {
      return Close();
    }
    if (ec == http::error::body_limit) {
      keep_alive_ = false;
      return Write({413,
                    core::JsonObject()
                        .Str("error", "invalid")
                        .Str("field", "")
                        .Str("message", "the body is over " +
                                            std::to_string(settings_.max_body_bytes) + " bytes")
                        .Done(),
                    0},
                   11);
    }
    if (ec) {
      keep_alive_ = false;
      return Write({400,
                    core::JsonObject()
                        .Str("error", "invalid")
                        .Str("field", "")
                        .Str("message", "malformed HTTP request: " + ec.message())
                        .Done(),
                    0},
                   11);
    }
    auto& req = parser_->get();
    keep_alive_ = req.keep_alive();
    ApiRequest r;
    r.method = std::string(req.method_string());
    r.target = std::string(req.target());
    r.body = std::move(req.body());
    if (auto it = req.find("Idempotency-Key"); it != req.end()) {
      r.idempotency_key = std::string(it->value());
    }
    if (auto it = req.find("UniDesk-Actor"); it != req.end()) r.actor = std::string(it->value());
    int version = req.version();
    in_flight_.Add();
    net::post(workers_, [self = shared_from_this(), r = std::move(r), version] {
      HandleApiRequest(r, self->deps_, [self, version](ApiResponse response) {
        net::post(self->stream_.get_executor(), [self, response = std::move(response), version] {
          self->Write(response, version, /*in_flight=*/true);
        });
      });
    });
  }

  /// `in_flight`: the answer to a request counted in InFlight, done once it is written.
  void Write(const ApiResponse& r, int version, bool in_flight = false) {
    auto res = std::make_shared<http::response<http::string_body>>(
        static_cast<http::status>(r.status), version);
    res->set(http::field::server, "unidesk-api");
    res->set(http::field::content_type, "application/json");
    if (r.retry_after_s > 0) res->set(http::field::retry_after, std::to_string(r.retry_after_s));
    res->keep_alive(keep_alive_);
    res->body() = r.body + "\n";
    res->prepare_payload();
    http::async_write(
        stream_, *res,
        [self = shared_from_this(), res, in_flight](beast::error_code ec, std::size_t) {
          if (in_flight) self->in_flight_.Done();
          if (ec || !self->keep_alive_) return self->Close();
          self->Read();
        });
  }

  void Close() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  const ApiSettings& settings_;
  ApiDeps& deps_;
  net::thread_pool& workers_;
  InFlight& in_flight_;
  bool keep_alive_ = false;
};

}  // namespace

class ApiServer::Listener : public std::enable_shared_from_this<ApiServer::Listener> {
 public:
  Listener(net::io_context& ioc, ApiServer& server)
      : ioc_(ioc), acceptor_(net::make_strand(ioc)), server_(server) {}

  void Open(const std::string& address, unsigned short port) {
    tcp::endpoint ep(net::ip::make_address(address), port);
    acceptor_.open(ep.protocol());
    acceptor_.set_option(net::socket_base::reuse_address(true));
    acceptor_.bind(ep);
    acceptor_.listen(net::socket_base::max_listen_connections);
  }
  unsigned short port() const { return acceptor_.local_endpoint().port(); }
  void Accept() {
    acceptor_.async_accept(net::make_strand(ioc_), [self = shared_from_this()](beast::error_code ec,
                                                                               tcp::socket socket) {
      if (ec == net::error::operation_aborted) return;
      if (!ec) {
        beast::error_code ignored;
        socket.set_option(tcp::no_delay(true), ignored);  // a response is due now: no Nagle
        std::make_shared<Session>(std::move(socket), self->server_.settings_, self->server_.deps_,
                                  self->server_.workers_, self->server_.in_flight_)
            ->Run();
      }
      self->Accept();
    });
  }
  void Close() {
    net::post(acceptor_.get_executor(), [self = shared_from_this()] {
      beast::error_code ignored;
      self->acceptor_.close(ignored);
    });
  }

 private:
  net::io_context& ioc_;
  tcp::acceptor acceptor_;
  ApiServer& server_;
};

void InFlight::Add() {
  std::lock_guard<std::mutex> lock(mu_);
  ++count_;
}

void InFlight::Done() {
  std::lock_guard<std::mutex> lock(mu_);
  if (--count_ == 0) idle_.notify_all();
}

void InFlight::WaitIdle() {
  std::unique_lock<std::mutex> lock(mu_);
  idle_.wait(lock, [this] { return count_ == 0; });
}

ApiServer::ApiServer(ApiSettings settings, ApiDeps deps, core::LoggerPtr log)
    : settings_(std::move(settings)),
      deps_(std::move(deps)),
      log_(std::move(log)),
      workers_(static_cast<std::size_t>(settings_.workers)) {}

ApiServer::~ApiServer() { Stop(); }

void ApiServer::Start() {
  core::NamePoolThreads(workers_, settings_.workers, "ud-api-work");
  listener_ = std::make_shared<Listener>(ioc_, *this);
  listener_->Open(settings_.address, settings_.port);
  port_ = listener_->port();
  listener_->Accept();
  work_.emplace(ioc_.get_executor());
  io_thread_ = std::thread([this] {
    core::NameThisThread("ud-api");
    ioc_.run();
  });
  log_->info("core API listening on http://{}:{}/api/v1", settings_.address, port_);
}

void ApiServer::Stop() {
  if (!io_thread_.joinable()) return;
  listener_->Close();
  in_flight_.WaitIdle();
  work_.reset();
  workers_.join();
  ioc_.stop();
  io_thread_.join();
}

}  // namespace unidesk::ingress::api
