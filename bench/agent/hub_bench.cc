// The hit hub alone, no kernel and no gRPC: one thread publishes chunks of 1,024 routed
// events (as the ring-buffer reader does), one WatchHits-like watcher of every probe takes
// up to 8,192 at a time (the agent bench's max_batch). Prints the CPU per event of each
// side, which the load of other processes barely moves (unlike events/s): build it on two
// trees and run them alternately to compare hub implementations.
//   bazel run //bench/agent:hub_bench -- [chunks]
#include <time.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "services/agent/hit_hub.h"

namespace xolfleet {
namespace {

double ThreadCpuNs() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return t.tv_sec * 1e9 + t.tv_nsec;
}

int Main(int chunks) {
  constexpr size_t kChunk = 1024, kMaxBatch = 8192, kQueue = 65536;
  HitHub hub(8);
  hub.RouteSlot(0, 0, 1);
  std::shared_ptr<Watcher> w = hub.AddWatcher({}, kQueue).value();
  std::atomic<uint64_t> taken{0};
  double consumer_ns = 0;
  std::thread consumer([&] {
    std::vector<RoutedHit> got;
    got.reserve(kMaxBatch);
    const double start = ThreadCpuNs();
    bool open = true;
    while (open) {
      got.clear();
      open = w->Take(&got, kMaxBatch, absl::Milliseconds(10));
      taken += got.size();
    }
    consumer_ns = ThreadCpuNs() - start;  // waits block (no CPU), takes copy
  });
  const absl::Time start = absl::Now();
  double producer_ns = 0;  // filling and publishing, not the waits
  std::shared_ptr<HitChunk> c = hub.NewChunk();
  for (int i = 0; i < chunks; ++i) {
    const double t = ThreadCpuNs();
    for (size_t k = 0; k < kChunk; ++k) {
      RoutedHit& h = c->emplace_back();
      h.event.cookie = 0;  // slot 0, generation 0
      h.event.pid = k;
    }
    hub.Publish(&c);
    producer_ns += ThreadCpuNs() - t;
    // Measures the hub, not drops: the producer waits while the queue is half full.
    while (w->queued_now() > kQueue / 2) std::this_thread::yield();
  }
  hub.RemoveWatcher(w);
  consumer.join();
  const double wall = absl::ToDoubleSeconds(absl::Now() - start);
  const uint64_t n = static_cast<uint64_t>(chunks) * kChunk;
  std::printf(
      "events %lu taken %lu dropped %lu  %.0f events/s  producer %.1f ns/event  consumer %.1f "
      "ns/event\n",
      static_cast<unsigned long>(n), static_cast<unsigned long>(taken.load()),
      static_cast<unsigned long>(w->dropped()), n / wall, producer_ns / n, consumer_ns / n);
  return taken.load() + w->dropped() == n ? 0 : 1;
}

}  // namespace
}  // namespace xolfleet

int main(int argc, char** argv) { return xolfleet::Main(argc > 1 ? std::atoi(argv[1]) : 20000); }
