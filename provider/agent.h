#pragma once
// The agent's connection loop: dial, hello, heartbeats, outbox reports (paced below the server's
// message rate), acks, and the server's assign/cancel handed to the task manager; on any
// failure, wait (backoff with full jitter, at least what a 503 asked) and dial again. Attempts
// keep running while the session is down; their reports wait in the outbox.

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

#include "core/log.h"
#include "provider/agent_config.h"
#include "provider/data_dir_lock.h"
#include "provider/outbox.h"
#include "provider/task_manager.h"

namespace unidesk::provider {

/// Why Run returned.
enum class AgentExit { kStopped = 0, kTokenRefused = 4, kProtocolRefused = 5, kSuperseded = 6 };

class Agent {
 public:
  Agent(AgentConfig config, core::LoggerPtr log);
  ~Agent();
  /// Runs until Stop() or a refusal that retrying cannot fix.
  AgentExit Run();
  /// Thread-safe: closes the session with 1001 (going away) and makes Run return.
  void Stop();

 private:
  class Session;
  /// Every `hygiene_interval`: reap orphaned containers, then collect the disk (host_hygiene.h).
  void Hygiene();

  AgentConfig config_;
  core::LoggerPtr log_;
  DataDirLock lock_;  // before anything in the data dir is opened
  Outbox outbox_;
  boost::asio::io_context ioc_;
  std::unique_ptr<TaskManager> tasks_;
  std::atomic<bool> stopping_{false};
  std::shared_ptr<Session> session_;
  std::mutex hygiene_mu_;
  std::condition_variable hygiene_cv_;
  bool hygiene_stop_ = false;
  std::thread hygiene_;
};

}  // namespace unidesk::provider
