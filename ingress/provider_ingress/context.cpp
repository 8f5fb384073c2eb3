#include "ingress/provider_ingress/context.h"

#include <boost/asio/post.hpp>

namespace unidesk::ingress {

void RecordRejection(IngressContext& ctx, Rejection r) {
  std::int64_t skipped = 0;
  {
    std::lock_guard<std::mutex> lock(ctx.rejections_mu);
    if (!ctx.rejections.Take(TokenBucket::Clock::now())) {
      if (++ctx.rejections_unrecorded % 100 == 1) {
        ctx.log->warn("rejections arrive faster than 20/s; {} not recorded as events so far",
                      ctx.rejections_unrecorded);
      }
      return;
    }
    skipped = ctx.rejections_unrecorded;
  }
  if (skipped > 0) r.detail += " (" + std::to_string(skipped) + " earlier rejections unrecorded)";
  boost::asio::post(ctx.db, [&ctx, r = std::move(r)] { ctx.store.RecordRejection(r); });
}

}  // namespace unidesk::ingress
