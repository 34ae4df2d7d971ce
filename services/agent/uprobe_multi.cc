#include "services/agent/uprobe_multi.h"

#include <bpf/bpf.h>
#include <errno.h>
#include <linux/bpf.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "services/common/errno_status.h"

namespace xolfleet {
namespace {

// union bpf_attr's link_create member with the uprobe_multi arm, as in
// Linux 6.6 include/uapi/linux/bpf.h (the Debian 12 headers stop at 6.1).
struct LinkCreateUprobeMultiAttr {
  uint32_t prog_fd;
  uint32_t target_fd;
  uint32_t attach_type;
  uint32_t flags;
  struct {
    uint64_t path;
    uint64_t offsets;
    uint64_t ref_ctr_offsets;
    uint64_t cookies;
    uint32_t cnt;
    uint32_t flags;  // BPF_F_UPROBE_MULTI_RETURN = 1
    uint32_t pid;
  } uprobe_multi;
};
static_assert(offsetof(LinkCreateUprobeMultiAttr, uprobe_multi) == 16,
              "link_create's union starts at byte 16");

int RawLinkCreate(int prog_fd, const char* path, const uint64_t* offsets, const uint64_t* cookies,
                  uint32_t cnt, int pid) {
  // Zero the whole of union bpf_attr: the kernel requires every byte past the
  // fields of the command to be zero.
  union {
    union bpf_attr attr;
    LinkCreateUprobeMultiAttr lc;
    char bytes[256];
  } u;
  memset(&u, 0, sizeof(u));
  u.lc.prog_fd = prog_fd;
  u.lc.attach_type = kBpfTraceUprobeMulti;
  u.lc.uprobe_multi.path = reinterpret_cast<uint64_t>(path);
  u.lc.uprobe_multi.offsets = reinterpret_cast<uint64_t>(offsets);
  u.lc.uprobe_multi.cookies = reinterpret_cast<uint64_t>(cookies);
  u.lc.uprobe_multi.cnt = cnt;
  u.lc.uprobe_multi.pid = pid > 0 ? pid : 0;
  return static_cast<int>(syscall(__NR_bpf, BPF_LINK_CREATE, &u, sizeof(u)));
}

}  // namespace

absl::StatusOr<UprobeMultiLink> UprobeMultiLink::Create(int prog_fd, const std::string& path,
                                                        absl::Span<const uint64_t> offsets,
                                                        absl::Span<const uint64_t> cookies,
                                                        int pid) {
  if (offsets.empty() || offsets.size() != cookies.size()) {
    return absl::InvalidArgumentError(absl::StrCat("uprobe_multi link on ", path, ": ",
                                                   offsets.size(), " offsets but ", cookies.size(),
                                                   " cookies"));
  }
  int fd = RawLinkCreate(prog_fd, path.c_str(), offsets.data(), cookies.data(),
                         static_cast<uint32_t>(offsets.size()), pid);
  if (fd < 0) {
    int err = errno;
    std::string msg = absl::StrCat(
        "bpf(BPF_LINK_CREATE, uprobe_multi) on ", path, " with ", offsets.size(), " offsets",
        pid > 0 ? absl::StrCat(" for pid ", pid) : "", ": ", strerror(err));
    return ErrnoToStatus(err, msg);
  }
  return UprobeMultiLink(fd);
}

UprobeMultiLink& UprobeMultiLink::operator=(UprobeMultiLink&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) close(fd_);
    fd_ = other.fd_;
    other.fd_ = -1;
  }
  return *this;
}

UprobeMultiLink::~UprobeMultiLink() {
  if (fd_ >= 0) close(fd_);
}

absl::Status ProbeUprobeMultiLinkSupport() {
  // `r0 = 0; exit`, loaded as a kprobe program expecting uprobe_multi links.
  const struct bpf_insn insns[] = {
      {BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, 0},
      {BPF_JMP | BPF_EXIT, 0, 0, 0, 0},
  };
  LIBBPF_OPTS(bpf_prog_load_opts, opts);
  opts.expected_attach_type = static_cast<enum bpf_attach_type>(kBpfTraceUprobeMulti);
  int prog_fd = bpf_prog_load(BPF_PROG_TYPE_KPROBE, "xol_probe_umulti", "GPL", insns,
                              sizeof(insns) / sizeof(insns[0]), &opts);
  if (prog_fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("loading a uprobe_multi test program failed: ", strerror(errno)));
  }
  // A link on "/" (a directory) fails with EBADF where uprobe_multi exists, and
  // with EINVAL before 6.6 (unknown attach type).
  const uint64_t offset = 0, cookie = 0;
  int link_fd = RawLinkCreate(prog_fd, "/", &offset, &cookie, 1, 0);
  int err = errno;
  if (link_fd >= 0) close(link_fd);
  close(prog_fd);
  if (link_fd < 0 && err == EBADF) return absl::OkStatus();
  return absl::UnavailableError(
      absl::StrCat("bpf(BPF_LINK_CREATE) does not know BPF_TRACE_UPROBE_MULTI (Linux 6.6+): ",
                   link_fd >= 0 ? "unexpected success" : strerror(err)));
}

}  // namespace xolfleet
