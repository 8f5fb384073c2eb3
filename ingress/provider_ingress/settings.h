#pragma once
// Settings of the provider ingress (flags of `unidesk-server`, see --help and docs/protocol.md).

#include <chrono>
#include <cstddef>
#include <string>

namespace unidesk::ingress {

struct IngressSettings {
  std::string address = "0.0.0.0";                      // the public listener
  unsigned short port = 8470;                           // 0: any free port (tests)
  int io_threads = 1;                                   // socket threads
  int db_threads = 4;                                   // blocking Postgres work
  std::chrono::milliseconds heartbeat_interval{15000};  // told to agents in `welcome`
  /// No frame and no pong for this long: the link is dead and the session is closed. Beast
  /// pings after half of it, so a frozen agent is found well inside the offline window.
  std::chrono::milliseconds idle_timeout{30000};
  std::chrono::milliseconds handshake_timeout{10000};
  std::chrono::milliseconds heartbeat_flush{250};  // heartbeats are written in batches
  double messages_per_s = 50;                      // per session, sustained
  double message_burst = 200;                      // per session, saved up
  double accepts_per_s = 500;  // new sessions a second; beyond it: 503 + Retry-After
  double accept_burst = 1000;
  std::size_t send_queue_max = 256;  // frames waiting to be sent to one node
};

}  // namespace unidesk::ingress
