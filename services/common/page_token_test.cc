#include "services/common/page_token.h"

#include "absl/strings/escaping.h"
#include "gtest/gtest.h"
#include "protos/xolfleet/v1/agent.pb.h"
#include "protos/xolfleet/v1/controller.pb.h"

namespace xolfleet {
namespace {

namespace v1 = ::xolfleet::v1;

TEST(PageTokenTest, RoundTripsTheKey) {
  const uint64_t digest = 0x0123456789abcdefull;
  std::vector<std::string> key = {"node-a", "set:with:colons", "", "7"};
  std::string token = EncodePageToken(digest, key);
  absl::StatusOr<PageStart> start = StartPage(3, token, digest, key.size());
  ASSERT_TRUE(start.ok()) << start.status();
  EXPECT_FALSE(start->first);
  EXPECT_EQ(start->size, 3u);
  EXPECT_EQ(start->after, key);
}

TEST(PageTokenTest, PageSizeDefaultsAndClamps) {
  EXPECT_EQ(StartPage(0, "", 1, 1)->size, static_cast<size_t>(kDefaultPageSize));
  EXPECT_TRUE(StartPage(0, "", 1, 1)->first);
  EXPECT_EQ(StartPage(kMaxPageSize + 1, "", 1, 1)->size, static_cast<size_t>(kMaxPageSize));
  absl::StatusOr<PageStart> negative = StartPage(-1, "", 1, 1);
  EXPECT_EQ(negative.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(negative.status().message().find("page_size -1"), std::string::npos);
}

TEST(PageTokenTest, MalformedTokensAreRefused) {
  const uint64_t digest = 42;
  std::string good = EncodePageToken(digest, {"a", "b"});
  std::string raw;
  ASSERT_TRUE(absl::WebSafeBase64Unescape(good, &raw));
  for (const std::string& bad :
       {std::string("not base64 !"), absl::WebSafeBase64Escape("xp2" + raw.substr(3)),
        absl::WebSafeBase64Escape(raw.substr(0, raw.size() - 1)),
        absl::WebSafeBase64Escape(raw + ":9:x"), absl::WebSafeBase64Escape("xp1:zz"),
        EncodePageToken(digest, {"a"})}) {
    absl::StatusOr<PageStart> start = StartPage(0, bad, digest, 2);
    EXPECT_EQ(start.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(start.status().message().find("malformed page_token"), std::string::npos) << bad;
  }
}

TEST(PageTokenTest, TokenOfOtherFiltersIsRefused) {
  v1::ListFleetProbesRequest a;
  a.add_node_names("n1");
  v1::ListFleetProbesRequest b;
  b.add_node_names("n2");
  std::string token = EncodePageToken(FilterDigest(a), {"n1", "s", "0"});
  absl::StatusOr<PageStart> start = StartPage(0, token, FilterDigest(b), 3);
  EXPECT_EQ(start.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(start.status().message().substr(0, 42), "page_token does not belong to this request");
}

TEST(PageTokenTest, DigestIgnoresPagingFieldsAndNamesTheCall) {
  v1::ListAgentsRequest a;
  a.mutable_selector()->mutable_match_labels()->insert({"zone", "a"});
  v1::ListAgentsRequest paged = a;
  paged.set_page_size(7);
  paged.set_page_token("abc");
  EXPECT_EQ(FilterDigest(a), FilterDigest(paged));
  // Same (empty) filters, other call: a token of one call does not fit the other.
  EXPECT_NE(FilterDigest(v1::ListRequest()), FilterDigest(v1::ListAgentsRequest()));
}

}  // namespace
}  // namespace xolfleet
