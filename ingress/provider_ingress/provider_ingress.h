#pragma once
// The `ingress` role: the public WebSocket endpoint for providers (docs/protocol.md).

#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/event_catalogue.h"
#include "core/event_store.h"
#include "core/event_tail.h"
#include "core/log.h"
#include "ingress/provider_ingress/context.h"
#include "ingress/provider_ingress/heartbeat_batcher.h"
#include "ingress/provider_ingress/settings.h"
#include "ingress/provider_ingress/task_dispatch.h"

namespace unidesk::ingress {

class Listener;

class ProviderIngress {
 public:
  ProviderIngress(IngressSettings settings, const std::string& conninfo,
                  const core::EventCatalogue& catalogue, core::EventStore& events,
                  core::LoggerPtr log);
  ~ProviderIngress();
  /// Binds the listener (throws boost::system::system_error) and starts serving.
  void Start();
  /// Closes every session with 1001 (going away) and stops.
  void Stop();
  unsigned short port() const;
  const std::string& id() const { return id_; }
  /// A committed assignment handed over in-process by this copy's scheduler: sent at once when
  /// the node's session is here. Thread-safe. The bus brings the same assignment later; the
  /// session sends each (task, attempt) once.
  void DeliverAssignment(const std::string& task, std::int64_t attempt, const std::string& node,
                         const std::string& spec_json, const std::string& gpu_indices_json);
  /// Before Start: the events' `source` of the scheduler that hands its placements over here.
  /// Its assignments arriving by the bus first (the tail can read them before the scheduler's
  /// thread gets a core back after its commit) wait a grace period for the hand-over instead
  /// of costing a query for the spec; the bus sends them only if the hand-over did not.
  void ExpectHandOverFrom(std::string scheduler_source) {
    handover_source_ = std::move(scheduler_source);
  }

 private:
  void OnBusEvent(const core::RecordedEvent& e);
  /// Sends an assignment the bus brought unless the session sent it already, reading its spec.
  void SendFromBus(const std::shared_ptr<ProviderSession>& session, const std::string& task,
                   std::int64_t attempt, const std::string& node);

  std::string id_;
  std::string handover_source_;
  core::LoggerPtr log_;
  boost::asio::io_context ioc_;
  boost::asio::thread_pool db_;
  IngressStore store_;
  TaskDispatch tasks_;
  TaskReportQueue reports_;
  SessionRegistry registry_;
  HeartbeatBatcher heartbeats_;
  IngressContext ctx_;
  core::EventTail tail_;
  std::shared_ptr<Listener> listener_;
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work_;
  std::vector<std::thread> io_threads_;
};

}  // namespace unidesk::ingress
