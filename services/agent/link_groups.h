// The kernel links of the probes: probes are linked in groups, one uprobe_multi link per
// (open file, pid) or, in perf mode, one perf-event link per probe (probe_program.h). A
// group lives as long as one of its probes does; a multi group that loses some members
// is re-linked for the rest by the probe manager.
#ifndef XOLFLEET_SERVICES_AGENT_LINK_GROUPS_H_
#define XOLFLEET_SERVICES_AGENT_LINK_GROUPS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "services/agent/attachment.h"
#include "services/agent/probe_program.h"
#include "services/common/open_file.h"

namespace xolfleet {

struct LinkGroup {
  std::string path;  // as requested (messages)
  // Held while the group lives: the kernel is given /proc/self/fd/N of it, so re-linking
  // survivors of a partial detach probes the same file too.
  std::shared_ptr<const OpenFile> file;
  int pid = 0;
  std::unique_ptr<Attachment> attachment;  // null until linked
  std::vector<std::string> probe_ids;      // members
};

// The link groups of one Attach request, planned first and linked at once: everything
// that allocates is done in Add, before any link goes live (a link on libc or libstdc++
// makes the agent's own calls into them trap as well).
class LinkBatch {
 public:
  explicit LinkBatch(v1::LinkMode mode) : mode_(mode) {}

  // Adds probe `id` at `offset` of `file` for `pid` (0: every process), with its BPF
  // cookie; returns the probe's group. Groups are keyed by the open file (one per path
  // in a request), so a group's probes are all on the file that was checked.
  std::shared_ptr<LinkGroup> Add(const std::string& id, const std::string& path,
                                 std::shared_ptr<const OpenFile> file, int pid, uint64_t offset,
                                 uint64_t cookie);

  size_t group_count() const { return groups_.size(); }

  // Makes every group's link: multi links of different groups side by side on up to `max_threads`
  // threads; perf links one group after the other (libbpf's attach path keeps unsynchronised
  // caches). A failure stops the groups not started yet; the first failure (in group order) is
  // returned, and links made so far stay in their groups until Close.
  absl::Status Link(const ProbeProgram& program, size_t max_threads);
  // Closes every link made (a rolled-back request), groups side by side.
  void Close(size_t max_threads);

 private:
  const v1::LinkMode mode_;
  std::map<std::tuple<const OpenFile*, int, size_t>, size_t> index_;  // key -> group
  std::vector<std::shared_ptr<LinkGroup>> groups_;
  std::vector<std::vector<uint64_t>> offsets_, cookies_;  // per group
  size_t added_ = 0;
};

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_AGENT_LINK_GROUPS_H_
