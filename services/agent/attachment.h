// A kernel attachment of the probe program: the RAII object behind one group of
// probes. Destroying it detaches every probe it holds (closing a uprobe_multi
// link fd, or destroying one perf-event link per probe).
#ifndef XOLFLEET_SERVICES_AGENT_ATTACHMENT_H_
#define XOLFLEET_SERVICES_AGENT_ATTACHMENT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "services/agent/probe_program.h"
#include "services/common/open_file.h"

namespace xolfleet {

class Attachment {
 public:
  virtual ~Attachment() = default;
  // Number of kernel link objects (1 for a multi link, one per probe for perf
  // links).
  virtual size_t link_count() const = 0;
};

// Both attach through `file.proc_path()` (/proc/self/fd/N), never through the
// path a request named: the kernel resolves the magic link to the very inode the
// agent opened, read and checked, whatever the path names by now.

// One uprobe_multi link for every offset (file offsets of `file`, same length
// as `cookies`); `pid` > 0 filters in the kernel.
absl::StatusOr<std::unique_ptr<Attachment>> AttachMulti(const ProbeProgram& program,
                                                        const OpenFile& file,
                                                        absl::Span<const uint64_t> offsets,
                                                        absl::Span<const uint64_t> cookies,
                                                        int pid);

// One perf-event uprobe link per offset (libbpf's
// bpf_program__attach_uprobe_opts with a BPF cookie). On failure, the links
// made so far are destroyed before returning.
absl::StatusOr<std::unique_ptr<Attachment>> AttachPerf(const ProbeProgram& program,
                                                       const OpenFile& file,
                                                       absl::Span<const uint64_t> offsets,
                                                       absl::Span<const uint64_t> cookies, int pid);

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
