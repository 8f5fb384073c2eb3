#pragma once
// Names the server's threads for `top -H`, `ps -L`, `perf` and gdb: which thread uses the CPU,
// or is stuck, is read off its name ("ud-scheduler", "ud-tasks", "ud-api-work") instead of a
// stack trace.

#include <pthread.h>

#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>

namespace unidesk::core {

/// Linux keeps 15 characters; the rest is cut.
inline void NameThisThread(const std::string& name) {
  pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
}

/// Names each of a pool's `threads` threads: one job per thread, each holding its thread until
/// all have started, so no thread takes two. Call it before the pool gets other work. The
/// jobs share their state by pointer: the last of them may still be leaving the wait when this
/// returns.
inline void NamePoolThreads(boost::asio::thread_pool& pool, int threads, const std::string& name) {
  struct State {
    std::mutex mu;
    std::condition_variable all_named;
    int left;
  };
  auto state = std::make_shared<State>();
  state->left = threads;
  for (int i = 0; i < threads; ++i) {
    boost::asio::post(pool, [state, name] {
      NameThisThread(name);
      std::unique_lock<std::mutex> lock(state->mu);
      if (--state->left == 0) state->all_named.notify_all();
      state->all_named.wait(lock, [&] { return state->left == 0; });
    });
  }
  std::unique_lock<std::mutex> lock(state->mu);
  state->all_named.wait(lock, [&] { return state->left == 0; });
}

}  // namespace unidesk::core
