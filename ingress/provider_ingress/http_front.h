#pragma once
// The public listener: reads one HTTP request per connection and routes it. /v1/provider with a
// valid token becomes a ProviderSession; /healthz and /readyz answer; anything else is 404.

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <memory>
#include <optional>

#include "ingress/provider_ingress/context.h"

namespace unidesk::ingress {

/// The token in an `Authorization: Bearer udn_…` header, or why there is none.
struct BearerToken {
  std::optional<std::string> token;
  std::string error;  // token_missing | token_malformed
};
BearerToken ParseBearer(std::string_view header_value, bool present);

class HttpFront : public std::enable_shared_from_this<HttpFront> {
 public:
  HttpFront(boost::asio::ip::tcp::socket&& socket, IngressContext& ctx);
  void Run();

 private:
  using Request = boost::beast::http::request<boost::beast::http::string_body>;
  void OnRead(boost::beast::error_code ec, std::size_t bytes);
  void Route();
  void Upgrade(std::string token);
  void Respond(unsigned status, const std::string& json,
               std::optional<int> retry_after_s = std::nullopt);
  void Refuse(unsigned status, const std::string& reason, const std::string& detail,
              const std::string& node = "", std::optional<int> retry_after_s = std::nullopt);

  boost::beast::tcp_stream stream_;
  boost::beast::flat_buffer buffer_;
  std::optional<boost::beast::http::request_parser<boost::beast::http::string_body>> parser_;
  IngressContext& ctx_;
  std::string remote_;
  bool upgrade_required_ = false;
};

/// Accepts connections on the public address.
class Listener : public std::enable_shared_from_this<Listener> {
 public:
  Listener(boost::asio::io_context& ioc, IngressContext& ctx);
  /// Binds; throws boost::system::system_error when the address is taken.
  void Open(const std::string& address, unsigned short port);
  unsigned short port() const;
  void Run();
  void Close();

 private:
  void OnAccept(boost::beast::error_code ec, boost::asio::ip::tcp::socket socket);
  boost::asio::io_context& ioc_;
  boost::asio::ip::tcp::acceptor acceptor_;
  IngressContext& ctx_;
};

}  // namespace unidesk::ingress
