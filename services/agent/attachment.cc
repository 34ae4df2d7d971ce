#include "services/agent/attachment.h"

#include <bpf/libbpf.h>
#include <errno.h>
#include <string.h>

#include <atomic>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "services/agent/uprobe_multi.h"
#include "services/common/errno_status.h"
#include "services/common/log.h"

namespace xolfleet {
namespace {

class MultiAttachment final : public Attachment {
 public:
  explicit MultiAttachment(UprobeMultiLink link) : link_(std::move(link)) {}
  size_t link_count() const override { return 1; }

 private:
  UprobeMultiLink link_;
};

class PerfAttachment final : public Attachment {
 public:
  PerfAttachment(std::string path) : path_(std::move(path)) {}
  ~PerfAttachment() override {
    for (bpf_link* l : links_) {
      int err = bpf_link__destroy(l);
      if (err) Log("detaching a perf-event uprobe link on ", path_, ": ", strerror(-err));
    }
  }
  void Add(bpf_link* l) { links_.push_back(l); }
  size_t link_count() const override { return links_.size(); }

 private:
  std::string path_;
  std::vector<bpf_link*> links_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Attachment>> AttachMulti(const ProbeProgram& program,
                                                        const OpenFile& file,
                                                        absl::Span<const uint64_t> offsets,
                                                        absl::Span<const uint64_t> cookies,
                                                        int pid) {
  absl::StatusOr<UprobeMultiLink> link =
      UprobeMultiLink::Create(program.program_fd(), file.proc_path(), offsets, cookies, pid);
  if (!link.ok()) {
    return absl::Status(link.status().code(),
                        absl::StrCat(Truncated(file.path(), 512), ": ", link.status().message()));
  }
  return std::unique_ptr<Attachment>(new MultiAttachment(std::move(*link)));
}

absl::StatusOr<std::unique_ptr<Attachment>> AttachPerf(const ProbeProgram& program,
                                                       const OpenFile& file,
                                                       absl::Span<const uint64_t> offsets,
                                                       absl::Span<const uint64_t> cookies,
                                                       int pid) {
  const std::string path = Truncated(file.path(), 512);
  const std::string kernel_path = file.proc_path();
  auto att = std::make_unique<PerfAttachment>(path);
  for (size_t i = 0; i < offsets.size(); ++i) {
    LIBBPF_OPTS(bpf_uprobe_opts, opts);
    opts.bpf_cookie = cookies[i];
    // libbpf: pid -1 is every process, 0 would be the agent itself.
    bpf_link* l = bpf_program__attach_uprobe_opts(program.program(), pid > 0 ? pid : -1,
                                                  kernel_path.c_str(), offsets[i], &opts);
    if (l == nullptr) {
      int err = errno;
      return ErrnoToStatus(
          err,
          absl::StrCat("perf-event uprobe on ", path, " at file offset 0x", absl::Hex(offsets[i]),
                       pid > 0 ? absl::StrCat(" for pid ", pid) : "", ": ", strerror(err)));
    }
    att->Add(l);
  }
  return std::unique_ptr<Attachment>(std::move(att));
}

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
