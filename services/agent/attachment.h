// A kernel attachment of the probe program: the RAII object behind one group of
// probes. Destroying it detaches every probe it holds (closing a uprobe_multi
// link fd, or destroying one perf-event link per probe). ProbeProgram::Link makes
// them (probe_program.h); nothing here depends on BPF, so fakes can stand in.
#ifndef XOLFLEET_SERVICES_AGENT_ATTACHMENT_H_
#define XOLFLEET_SERVICES_AGENT_ATTACHMENT_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <vector>

namespace xolfleet {

class Attachment {
 public:
  virtual ~Attachment() = default;
  // Number of kernel link objects (1 for a multi link, one per probe for perf links).
  virtual size_t link_count() const = 0;
};

// Runs fn(0) .. fn(n - 1) on up to `max_threads` threads (this one included) and returns
// when all have run. Link groups are independent kernel objects: creating or closing
// them one after the other serialises work the kernel can overlap (each uprobe_multi
// close ends in its own RCU-tasks-trace and SRCU grace periods, each link create walks
// the processes mapping its file under their mmap locks), so a request with several
// link groups makes and closes them side by side.
void RunInParallel(size_t n, size_t max_threads, const std::function<void(size_t)>& fn);

// Destroys `attachments` (closing their links) with RunInParallel.
void DestroyInParallel(std::vector<std::unique_ptr<Attachment>> attachments, size_t max_threads);

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_AGENT_ATTACHMENT_H_
