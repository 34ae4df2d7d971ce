#include "services/agent/link_groups.h"

#include <atomic>
#include <utility>

namespace xolfleet {

std::shared_ptr<LinkGroup> LinkBatch::Add(const std::string& id, const std::string& path,
                                          std::shared_ptr<const OpenFile> file, int pid,
                                          uint64_t offset, uint64_t cookie) {
  const size_t n = added_++;
  // Multi: one link per (file, pid). Perf: one link per probe.
  const auto key = std::make_tuple(file.get(), pid, mode_ == v1::LINK_MODE_UPROBE_MULTI ? 0 : n);
  auto [it, inserted] = index_.emplace(key, groups_.size());
  if (inserted) {
    auto g = std::make_shared<LinkGroup>();
    g->path = path;
    g->file = std::move(file);
    g->pid = pid;
    groups_.push_back(std::move(g));
    offsets_.emplace_back();
    cookies_.emplace_back();
  }
  const size_t k = it->second;
  groups_[k]->probe_ids.push_back(id);
  offsets_[k].push_back(offset);
  cookies_[k].push_back(cookie);
  return groups_[k];
}

absl::Status LinkBatch::Link(const ProbeProgram& program, size_t max_threads) {
  std::vector<absl::Status> statuses(groups_.size());
  std::atomic<bool> failed{false};
  RunInParallel(groups_.size(), mode_ == v1::LINK_MODE_UPROBE_MULTI ? max_threads : 1,
                [&](size_t k) {
                  if (failed.load()) return;  // a failed link ends the request
                  LinkGroup* g = groups_[k].get();
                  absl::StatusOr<std::unique_ptr<Attachment>> att =
                      program.Link(*g->file, offsets_[k], cookies_[k], g->pid);
                  if (!att.ok()) {
                    statuses[k] = att.status();
                    failed = true;
                    return;
                  }
                  g->attachment = std::move(*att);
                });
  for (const absl::Status& st : statuses) {
    if (!st.ok()) return st;
  }
  return absl::OkStatus();
}

void LinkBatch::Close(size_t max_threads) {
  std::vector<std::unique_ptr<Attachment>> closing;
  closing.reserve(groups_.size());
  for (const auto& g : groups_) closing.push_back(std::move(g->attachment));
  DestroyInParallel(std::move(closing), max_threads);
}

}  // namespace xolfleet
