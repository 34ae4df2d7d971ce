// Paging of the v1 List calls (agent List, controller ListFleetProbes and ListAgents).
//
// A page token is opaque to clients: base64url of a version tag, a digest of the request's
// filters (the request with page_size and page_token cleared) and the key of the last item
// returned. The server keeps no state per token: the next page is the items whose key is
// after the token's key in the call's stable order, so an item added or removed between two
// pages does not make the next page repeat or skip the items that stayed.
#ifndef XOLFLEET_SERVICES_COMMON_PAGE_TOKEN_H_
#define XOLFLEET_SERVICES_COMMON_PAGE_TOKEN_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/message.h"

namespace xolfleet {

// page_size 0: kDefaultPageSize items; larger than kMaxPageSize: clamped to it; negative:
// INVALID_ARGUMENT.
inline constexpr int32_t kDefaultPageSize = 500;
inline constexpr int32_t kMaxPageSize = 5000;

// A stable digest of a List request's filters: `req` serialized deterministically with its
// page_size and page_token fields cleared (so a client may change page_size between pages).
uint64_t FilterDigest(const google::protobuf::Message& req);

struct PageStart {
  size_t size = 0;                 // items in this page (kDefaultPageSize when 0 was asked)
  bool first = true;               // no token: the first page
  std::vector<std::string> after;  // the key of the last item of the previous page
};

// Validates page_size and decodes page_token against the request's filter digest. `key_parts`:
// how many strings the call's keys have. Errors: INVALID_ARGUMENT.
absl::StatusOr<PageStart> StartPage(int32_t page_size, absl::string_view page_token,
                                    uint64_t filter_digest, size_t key_parts);

// The token of the page after the one ending with the item of key `last`.
std::string EncodePageToken(uint64_t filter_digest, const std::vector<std::string>& last);

// Client side: every page of a List call, from `req` on (its page_token as given), each
// handed to `take(page)` in order. `fetch(req, &page)` makes one call and returns its status
// (absl::Status or grpc::Status); the first error ends the walk and is returned.
template <typename Response, typename Request, typename Fetch, typename Take>
auto ForEachPage(Request req, Fetch&& fetch, Take&& take)
    -> decltype(fetch(req, static_cast<Response*>(nullptr))) {
  while (true) {
    Response page;
    auto status = fetch(static_cast<const Request&>(req), &page);
    if (!status.ok()) return status;
    take(page);
    if (page.next_page_token().empty()) return status;
    req.set_page_token(page.next_page_token());
  }
}

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_COMMON_PAGE_TOKEN_H_
