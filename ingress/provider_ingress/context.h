#pragma once
// What every connection of the provider ingress shares.

#include <atomic>
#include <boost/asio/thread_pool.hpp>
#include <mutex>
#include <string>

#include "core/log.h"
#include "ingress/provider_ingress/ingress_store.h"
#include "ingress/provider_ingress/session_registry.h"
#include "ingress/provider_ingress/settings.h"
#include "ingress/provider_ingress/task_dispatch.h"
#include "ingress/provider_ingress/task_report_queue.h"
#include "ingress/provider_ingress/token_bucket.h"

namespace unidesk::ingress {

class HeartbeatBatcher;

struct IngressContext {
  IngressSettings settings;
  std::string ingress_id;
  IngressStore& store;
  TaskDispatch& tasks;
  TaskReportQueue& reports;  // task reports, applied in groups
  SessionRegistry& registry;
  HeartbeatBatcher& heartbeats;
  boost::asio::thread_pool& db;  // blocking Postgres work runs here, never on socket threads
  core::LoggerPtr log;
  std::atomic<bool> stopping{false};
  std::mutex accept_mu;
  TokenBucket accepts;
  std::mutex rejections_mu;
  TokenBucket rejections{20, 200};  // ingress.rejected events a second, at most
  std::int64_t rejections_unrecorded = 0;
};

/// Records `r` as ingress.rejected on the database threads, at most 20 a second (burst 200): a
/// flood of bad input must not become a flood of events. What is not recorded is counted in the
/// log instead.
void RecordRejection(IngressContext& ctx, Rejection r);

}  // namespace unidesk::ingress
