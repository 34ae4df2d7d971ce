#include "services/common/probe_spec.h"

#include "gtest/gtest.h"
#include "services/common/proto_time.h"

namespace xolfleet {
namespace {

TEST(ProbeSpec, OneGrammarForEverySite) {
  struct Row {
    std::string text, path, symbol;
    uint64_t offset;
  };
  for (const Row& r : std::vector<Row>{
           {"/bin/x:main", "/bin/x", "main", 0},
           {"/bin/x:main+16", "/bin/x", "main", 16},
           {"/bin/x:main+0x10", "/bin/x", "main", 16},
           {"/bin/x:0x1234", "/bin/x", "", 0x1234},  // a file offset, not a symbol "0x1234"
           {"/bin/x@0x1234", "/bin/x", "", 0x1234},
           {"/bin/x@1234", "/bin/x", "", 0x1234},
           {"/a:b/c:_ZN3foo3barEv", "/a:b/c", "_ZN3foo3barEv", 0},
       }) {
    absl::StatusOr<v1::ProbeSpec> s = ParseSite(r.text);
    ASSERT_TRUE(s.ok()) << r.text << ": " << s.status();
    EXPECT_EQ(s->binary_path(), r.path) << r.text;
    EXPECT_EQ(s->symbol(), r.symbol) << r.text;
    EXPECT_EQ(s->offset(), r.offset) << r.text;
    // FormatSite is the inverse (in its canonical spelling).
    absl::StatusOr<v1::ProbeSpec> again = ParseSite(FormatSite(*s));
    ASSERT_TRUE(again.ok()) << FormatSite(*s);
    EXPECT_EQ(again->SerializeAsString(), s->SerializeAsString()) << FormatSite(*s);
  }
  for (const char* bad :
       {"/bin/x", ":main", "/bin/x:", "/bin/x:main+zz", "/bin/x@0xzz", "/bin/x@", "/bin/x:+3"}) {
    EXPECT_EQ(ParseSite(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(ProbeSpec, RegistersInAnySpelling) {
  for (const char* n : {"rdi", "RDI", "%rdi", " rdi "}) {
    absl::StatusOr<v1::Register> r = ParseRegister(n);
    ASSERT_TRUE(r.ok()) << n;
    EXPECT_EQ(*r, v1::REGISTER_RDI);
  }
  EXPECT_FALSE(ParseRegister("xmm0").ok());
  EXPECT_FALSE(ParseRegister("register_unspecified").ok());
}

v1::ProbeSpec Good() {
  v1::ProbeSpec s;
  s.set_binary_path("/usr/bin/true");
  s.set_symbol("main");
  return s;
}

TEST(ProbeSpec, OneValidatorAndItsLimits) {
  EXPECT_TRUE(ValidateSpec(Good(), ReservedLabels::kRefuse).ok());
  struct Case {
    std::function<void(v1::ProbeSpec*)> mutate;
    std::string needle;
  };
  std::vector<Case> cases = {
      {[](auto* s) { s->set_binary_path("relative"); }, "absolute"},
      {[](auto* s) { s->set_binary_path("/a/../etc/shadow"); }, ".."},
      {[](auto* s) { s->set_binary_path("/" + std::string(5000, 'a')); }, "limit"},
      {[](auto* s) { s->set_binary_path(std::string("/a\0b", 4)); }, "NUL"},
      {[](auto* s) { s->set_binary_path("/tmp/\xff"); }, "UTF-8"},
      {[](auto* s) { s->set_symbol(std::string(kMaxSymbolBytes + 1, 'x')); }, "longer than"},
      {[](auto* s) { s->set_rate_limit_per_sec(kMaxRateLimit); }, "rate_limit"},
      {[](auto* s) { s->set_build_id("abc"); }, "even"},
      {[](auto* s) { s->set_build_id("zz"); }, "hex"},
      {[](auto* s) { s->add_capture(static_cast<v1::Register>(99)); }, "register"},
      {[](auto* s) { *s->mutable_ttl() = ToDurationProto(kMaxTtl + absl::Seconds(1)); },
       "ttl 720h1s exceeds the limit 720h"},
      {[](auto* s) { *s->mutable_ttl() = ToDurationProto(-absl::Seconds(5)); }, "ttl is negative"},
      {[](auto* s) { s->set_pid(-1); }, "negative"},
      {[](auto* s) { s->set_container_id("abc123"); }, "12..64 lowercase hex"},
      {[](auto* s) { s->set_container_id(std::string(65, 'a')); }, "12..64 lowercase hex"},
      {[](auto* s) { s->set_container_id("ABCDEF0123456"); }, "12..64 lowercase hex"},
      {[](auto* s) { s->set_container_id("0123456789ab/x"); }, "12..64 lowercase hex"},
      {[](auto* s) {
         s->set_container_id("0123456789ab");
         s->set_pid(7);
       },
       "set one of them"},
      {[](auto* s) { (*s->mutable_labels())["xolfleet.io/owner"] = "uid:0"; }, "reserved"},
      {[](auto* s) { (*s->mutable_labels())["bad key"] = "v"; }, "may only contain"},
      {[](auto* s) {
         for (size_t i = 0; i <= kMaxLabels; ++i) (*s->mutable_labels())["k" + std::to_string(i)];
       },
       "limit"},
  };
  for (const char* id :
       {"0123456789ab", "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}) {
    v1::ProbeSpec s = Good();
    s.set_container_id(id);
    EXPECT_TRUE(ValidateSpec(s, ReservedLabels::kRefuse).ok()) << id;
  }
  for (size_t i = 0; i < cases.size(); ++i) {
    v1::ProbeSpec s = Good();
    cases[i].mutate(&s);
    absl::Status st = ValidateSpec(s, ReservedLabels::kRefuse);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << "case " << i;
    EXPECT_NE(st.message().find(cases[i].needle), std::string::npos)
        << "case " << i << ": " << st.message();
  }
}

TEST(ProbeSpec, ReservedLabelsDoNotCountAgainstTheUsersLimit) {
  // The controller accepted 32 user labels and the link then added reserved ones that the
  // agent refused: reserved labels are counted apart.
  v1::ProbeSpec s = Good();
  for (size_t i = 0; i < kMaxLabels; ++i) (*s.mutable_labels())["k" + std::to_string(i)] = "v";
  EXPECT_TRUE(ValidateSpec(s, ReservedLabels::kRefuse).ok());
  (*s.mutable_labels())["xolfleet.io/fleet-probe"] = "ps-1/0";
  (*s.mutable_labels())["xolfleet.io/owner"] = "uid:0";
  EXPECT_TRUE(ValidateSpec(s, ReservedLabels::kAllow).ok());
  EXPECT_FALSE(ValidateSpec(s, ReservedLabels::kRefuse).ok());
}

TEST(ProbeSpec, FleetProbeId) { EXPECT_EQ(FleetProbeId("ps-1a", 3), "ps-1a/3"); }

}  // namespace
}  // namespace xolfleet
