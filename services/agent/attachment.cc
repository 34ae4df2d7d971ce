#include "services/agent/attachment.h"

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

namespace xolfleet {

void RunInParallel(size_t n, size_t max_threads, const std::function<void(size_t)>& fn) {
  const size_t threads = std::min(n, std::max<size_t>(max_threads, 1));
  if (threads <= 1) {
    for (size_t i = 0; i < n; ++i) fn(i);
    return;
  }
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i = next++; i < n; i = next++) fn(i);
  };
  std::vector<std::thread> helpers;
  helpers.reserve(threads - 1);
  for (size_t t = 1; t < threads; ++t) helpers.emplace_back(work);
  work();
  for (std::thread& t : helpers) t.join();
}

void DestroyInParallel(std::vector<std::unique_ptr<Attachment>> attachments, size_t max_threads) {
  RunInParallel(attachments.size(), max_threads, [&](size_t i) { attachments[i].reset(); });
}

}  // namespace xolfleet
