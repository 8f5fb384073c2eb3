#include "ingress/provider_ingress/http_front.h"

#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/websocket.hpp>
#include <random>

#include "core/json.h"
#include "core/protocol.h"
#include "core/version.h"
#include "ingress/provider_ingress/provider_session.h"

namespace unidesk::ingress {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

BearerToken ParseBearer(std::string_view value, bool present) {
  if (!present || value.empty()) return {std::nullopt, "token_missing"};
  constexpr std::string_view kScheme = "Bearer ";
  if (value.substr(0, kScheme.size()) != kScheme) return {std::nullopt, "token_malformed"};
  std::string_view token = value.substr(kScheme.size());
  // Tokens are "udn_" and 43 base64url characters (32 random bytes).
  if (token.size() != 47 || token.substr(0, 4) != "udn_") return {std::nullopt, "token_malformed"};
  for (char c : token.substr(4)) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_';
    if (!ok) return {std::nullopt, "token_malformed"};
  }
  return {std::string(token), ""};
}

HttpFront::HttpFront(tcp::socket&& socket, IngressContext& ctx)
    : stream_(std::move(socket)), ctx_(ctx) {
  beast::error_code ec;
  auto ep = stream_.socket().remote_endpoint(ec);
  remote_ = ec ? "unknown" : ep.address().to_string() + ":" + std::to_string(ep.port());
}

void HttpFront::Run() {
  parser_.emplace();
  parser_->header_limit(8 * 1024);
  parser_->body_limit(4 * 1024);
  stream_.expires_after(ctx_.settings.handshake_timeout);
  http::async_read(stream_, buffer_, *parser_,
                   beast::bind_front_handler(&HttpFront::OnRead, shared_from_this()));
}

void HttpFront::OnRead(beast::error_code ec, std::size_t) {
  if (ec) return;  // a port scan, a dropped connection, a slow client: nothing to answer
  Route();
}

void HttpFront::Route() {
  const Request& req = parser_->get();
  std::string target(req.target());
  if (target == "/healthz") return Respond(200, "{\"status\":\"ok\"}");
  if (target == "/readyz") {
    net::post(ctx_.db, [self = shared_from_this()] {
      auto ping = self->ctx_.store.Ping();
      net::post(self->stream_.get_executor(), [self, ping] {
        std::string version = core::JsonObject()
                                  .Str("version", UNIDESK_VERSION)
                                  .Str("commit", core::GitCommit())
                                  .Done();
        if (ping.ok()) {
          self->Respond(200, core::JsonObject()
                                 .Str("status", "ready")
                                 .Raw("checks", "{\"postgres\":\"ok\"}")
                                 .Raw("build", version)
                                 .Done());
        } else {
          self->Respond(
              503,
              core::JsonObject()
                  .Str("status", "not ready")
                  .Raw("checks", core::JsonObject().Str("postgres", ping.error().message).Done())
                  .Raw("build", version)
                  .Done());
        }
      });
    });
    return;
  }
  if (target != core::protocol::kPath) {
    return Respond(404, "{\"error\":\"not_found\",\"message\":\"no such path\"}");
  }
  if (!beast::websocket::is_upgrade(req)) {
    upgrade_required_ = true;
    return Refuse(426, "not_websocket", "this endpoint takes a WebSocket upgrade");
  }
  auto auth = req.find(http::field::authorization);
  BearerToken bearer =
      ParseBearer(auth == req.end() ? std::string_view() : auth->value(), auth != req.end());
  if (!bearer.token) {
    return Refuse(
        401, bearer.error,
        bearer.error == "token_missing"
            ? "send the node token as 'Authorization: Bearer udn_...'"
            : "the Authorization header is not 'Bearer udn_' and 43 base64url characters");
  }
  bool admitted;
  {
    std::lock_guard<std::mutex> lock(ctx_.accept_mu);
    admitted = ctx_.accepts.Take(TokenBucket::Clock::now());
  }
  if (!admitted) {
    // Ramping up after a restart: spread the retries instead of taking the herd at once.
    thread_local std::mt19937 rng{std::random_device{}()};
    int wait_s = std::uniform_int_distribution<int>(1, 10)(rng);
    return Respond(503, "{\"error\":\"busy\",\"message\":\"accepting sessions gradually\"}",
                   wait_s);
  }
  Upgrade(std::move(*bearer.token));
}

void HttpFront::Upgrade(std::string token) {
  net::post(ctx_.db, [self = shared_from_this(), token = std::move(token)] {
    auto who = self->ctx_.store.Authenticate(token);
    net::post(self->stream_.get_executor(), [self, who = std::move(who)] {
      if (!who.ok()) {
        switch (who.error().code) {
          case StoreError::kUnknownToken:
            return self->Refuse(401, "token_unknown", who.error().message);
          case StoreError::kRevokedToken:
            return self->Refuse(403, "token_revoked", who.error().message);
          case StoreError::kReplacedToken:
            return self->Refuse(401, "token_replaced", who.error().message);
          case StoreError::kUnavailable:
          case StoreError::kRefused:
            return self->Respond(503,
                                 core::JsonObject()
                                     .Str("error", "unavailable")
                                     .Str("message", who.error().message)
                                     .Done(),
                                 5);
        }
      }
      auto session = std::make_shared<ProviderSession>(std::move(self->stream_), self->ctx_,
                                                       who.value(), self->remote_);
      session->Start(self->parser_->release());
    });
  });
}

void HttpFront::Refuse(unsigned status, const std::string& reason, const std::string& detail,
                       const std::string& node, std::optional<int> retry_after_s) {
  ctx_.log->info("refused {} from {}: {}", reason, remote_, detail);
  Rejection r{reason, detail, static_cast<int>(status), remote_, node, ""};
  RecordRejection(ctx_, r);
  Respond(status, core::JsonObject().Str("error", reason).Str("message", detail).Done(),
          retry_after_s);
}

void HttpFront::Respond(unsigned status, const std::string& json,
                        std::optional<int> retry_after_s) {
  auto res = std::make_shared<http::response<http::string_body>>(static_cast<http::status>(status),
                                                                 parser_->get().version());
  res->set(http::field::server, "unidesk-ingress");
  res->set(http::field::content_type, "application/json");
  if (retry_after_s) res->set(http::field::retry_after, std::to_string(*retry_after_s));
  if (upgrade_required_) {
    res->set(http::field::upgrade, "websocket");
    res->set(http::field::connection, "Upgrade");
  }
  res->keep_alive(false);
  res->body() = json + "\n";
  res->prepare_payload();
  http::async_write(stream_, *res,
                    [self = shared_from_this(), res](beast::error_code, std::size_t) {
                      beast::error_code ignored;
                      self->stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
                    });
}

Listener::Listener(net::io_context& ioc, IngressContext& ctx)
    : ioc_(ioc), acceptor_(net::make_strand(ioc)), ctx_(ctx) {}

void Listener::Open(const std::string& address, unsigned short port) {
  tcp::endpoint ep(net::ip::make_address(address), port);
  acceptor_.open(ep.protocol());
  acceptor_.set_option(net::socket_base::reuse_address(true));
  acceptor_.bind(ep);
  acceptor_.listen(net::socket_base::max_listen_connections);
}

unsigned short Listener::port() const { return acceptor_.local_endpoint().port(); }

void Listener::Run() {
  acceptor_.async_accept(net::make_strand(ioc_),
                         beast::bind_front_handler(&Listener::OnAccept, shared_from_this()));
}

void Listener::Close() {
  net::post(acceptor_.get_executor(), [self = shared_from_this()] {
    beast::error_code ignored;
    self->acceptor_.close(ignored);
  });
}

void Listener::OnAccept(beast::error_code ec, tcp::socket socket) {
  if (ec == net::error::operation_aborted || !acceptor_.is_open()) return;
  if (!ec) {
    // Frames are small and each one is due now (an assignment, a close): no Nagle delay.
    beast::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    std::make_shared<HttpFront>(std::move(socket), ctx_)->Run();
  }
  Run();
}

}  // namespace unidesk::ingress
