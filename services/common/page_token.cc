#include "services/common/page_token.h"

#include <algorithm>
#include <memory>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"

namespace xolfleet {
namespace {

constexpr absl::string_view kVersion = "xp1";

// FNV-1a, 64 bits: stable across processes and replicas (absl::Hash is seeded per process).
uint64_t Fnv1a(absl::string_view bytes) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

absl::Status Malformed() {
  return absl::InvalidArgumentError(
      "malformed page_token: pass the next_page_token of the previous response unchanged, or an "
      "empty page_token for the first page");
}

}  // namespace

uint64_t FilterDigest(const google::protobuf::Message& req) {
  std::unique_ptr<google::protobuf::Message> filters(req.New());
  filters->CopyFrom(req);
  const google::protobuf::Descriptor* d = filters->GetDescriptor();
  const google::protobuf::Reflection* r = filters->GetReflection();
  for (const char* name : {"page_size", "page_token"}) {
    if (const google::protobuf::FieldDescriptor* f = d->FindFieldByName(name)) {
      r->ClearField(filters.get(), f);
    }
  }
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream out(&bytes);
    google::protobuf::io::CodedOutputStream coded(&out);
    coded.SetSerializationDeterministic(true);
    filters->SerializeToCodedStream(&coded);
  }
  return Fnv1a(absl::StrCat(d->full_name(), "\n", bytes));
}

std::string EncodePageToken(uint64_t filter_digest, const std::vector<std::string>& last) {
  std::string raw = absl::StrCat(kVersion, ":", absl::Hex(filter_digest, absl::kZeroPad16));
  for (const std::string& part : last) absl::StrAppend(&raw, ":", part.size(), ":", part);
  return absl::WebSafeBase64Escape(raw);
}

absl::StatusOr<PageStart> StartPage(int32_t page_size, absl::string_view page_token,
                                    uint64_t filter_digest, size_t key_parts) {
  if (page_size < 0) {
    return absl::InvalidArgumentError(absl::StrCat("page_size ", page_size,
                                                   " is negative: use 0 for the default (",
                                                   kDefaultPageSize, ") or up to ", kMaxPageSize));
  }
  PageStart start;
  start.size = page_size == 0 ? kDefaultPageSize : std::min(page_size, kMaxPageSize);
  if (page_token.empty()) return start;
  std::string raw;
  if (!absl::WebSafeBase64Unescape(page_token, &raw)) return Malformed();
  absl::string_view rest = raw;
  // "xp1:" + 16 hex digits.
  if (!absl::ConsumePrefix(&rest, kVersion) || !absl::ConsumePrefix(&rest, ":") ||
      rest.size() < 16) {
    return Malformed();
  }
  uint64_t digest = 0;
  if (!absl::SimpleHexAtoi(rest.substr(0, 16), &digest)) return Malformed();
  rest.remove_prefix(16);
  while (!rest.empty()) {
    if (!absl::ConsumePrefix(&rest, ":")) return Malformed();
    size_t colon = rest.find(':');
    size_t len = 0;
    if (colon == absl::string_view::npos || !absl::SimpleAtoi(rest.substr(0, colon), &len) ||
        len > rest.size() - colon - 1) {
      return Malformed();
    }
    start.after.emplace_back(rest.substr(colon + 1, len));
    rest.remove_prefix(colon + 1 + len);
  }
  if (start.after.size() != key_parts) return Malformed();
  if (digest != filter_digest) {
    return absl::InvalidArgumentError(
        "page_token does not belong to this request: its filters differ from those of the request "
        "that returned it; repeat the first request's filters or start again without a page_token");
  }
  start.first = false;
  return start;
}

}  // namespace xolfleet
