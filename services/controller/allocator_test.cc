// The controller's allocator as linked: malloc is tcmalloc's, and allocations made inside
// the shared libraries (OpenSSL here, the largest per-connection user) go through it.
#include "services/controller/allocator.h"

#include <openssl/bio.h>

#include "gtest/gtest.h"

namespace xolfleet::controller {
namespace {

TEST(Allocator, MallocIsTcmalloc) {
  absl::StatusOr<std::string> a = CheckAllocator();
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->rfind("tcmalloc ", 0), 0u) << *a;
}

TEST(Allocator, OpenSslAllocatesThroughIt) {
  std::optional<size_t> before = AllocatedBytes();
  ASSERT_TRUE(before.has_value());
  // A BIO pair with 64 KiB write buffers on each side: OpenSSL mallocs both when pairing.
  BIO* a = nullptr;
  BIO* b = nullptr;
  ASSERT_EQ(BIO_new_bio_pair(&a, 64 << 10, &b, 64 << 10), 1);
  std::optional<size_t> during = AllocatedBytes();
  BIO_free(a);
  BIO_free(b);
  std::optional<size_t> after = AllocatedBytes();
  ASSERT_TRUE(during.has_value() && after.has_value());
  EXPECT_GE(*during, *before + (128u << 10));
  EXPECT_LE(*after + (128u << 10), *during);
}

}  // namespace
}  // namespace xolfleet::controller
