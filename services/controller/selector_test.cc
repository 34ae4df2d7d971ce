#include "services/controller/selector.h"

#include "gtest/gtest.h"
#include "services/common/grpc_status.h"
#include "services/common/proto_time.h"

namespace xolfleet::controller {
namespace {

v1::AgentRegister Node(const std::string& name, std::map<std::string, std::string> labels) {
  v1::AgentRegister r;
  r.set_node_name(name);
  for (auto& [k, v] : labels) (*r.mutable_labels())[k] = v;
  return r;
}

v1::FleetAttachRequest Good() {
  v1::FleetAttachRequest r;
  r.mutable_selector()->set_all(true);
  auto* s = r.add_specs();
  s->set_binary_path("/usr/bin/true");
  s->set_symbol("main");
  return r;
}

TEST(Selector, Matches) {
  v1::NodeSelector all;
  all.set_all(true);
  EXPECT_TRUE(Matches(all, Node("a", {})));
  v1::NodeSelector names;
  names.add_node_names("a");
  names.add_node_names("c");
  EXPECT_TRUE(Matches(names, Node("a", {})));
  EXPECT_FALSE(Matches(names, Node("b", {})));
  v1::NodeSelector labels;
  (*labels.mutable_match_labels())["zone"] = "a";
  (*labels.mutable_match_labels())["tier"] = "web";
  EXPECT_TRUE(Matches(labels, Node("x", {{"zone", "a"}, {"tier", "web"}, {"o", "1"}})));
  EXPECT_FALSE(Matches(labels, Node("x", {{"zone", "a"}})));
  EXPECT_FALSE(Matches(labels, Node("x", {{"zone", "b"}, {"tier", "web"}})));
  EXPECT_FALSE(Matches(v1::NodeSelector(), Node("x", {})));
}

TEST(Selector, ExactlyOneKind) {
  v1::NodeSelector none;
  EXPECT_EQ(ValidateSelector(none).code(), absl::StatusCode::kInvalidArgument);
  v1::NodeSelector two;
  two.set_all(true);
  two.add_node_names("a");
  EXPECT_EQ(ValidateSelector(two).code(), absl::StatusCode::kInvalidArgument);
  v1::NodeSelector dup;
  dup.add_node_names("a");
  dup.add_node_names("a");
  EXPECT_EQ(ValidateSelector(dup).code(), absl::StatusCode::kInvalidArgument);
  v1::NodeSelector bad;
  bad.add_node_names("a b");
  EXPECT_EQ(ValidateSelector(bad).code(), absl::StatusCode::kInvalidArgument);
}

TEST(Validate, GoodRequestPasses) { EXPECT_TRUE(ValidateAttach(Good()).ok()); }

TEST(Validate, BadRequestsSayWhat) {
  struct Case {
    std::function<void(v1::FleetAttachRequest*)> mutate;
    std::string needle;
  };
  std::vector<Case> cases = {
      {[](auto* r) { r->clear_specs(); }, "at least one"},
      {[](auto* r) { r->mutable_specs(0)->set_binary_path("relative/path"); }, "absolute"},
      {[](auto* r) { r->mutable_specs(0)->set_binary_path("/a/../etc/shadow"); }, ".."},
      {[](auto* r) { r->mutable_specs(0)->set_binary_path(std::string(5000, '/')); }, "limit"},
      {[](auto* r) { r->mutable_specs(0)->set_binary_path(std::string("/a\0b", 4)); }, "NUL"},
      {[](auto* r) { r->mutable_specs(0)->set_symbol(std::string(kMaxSymbolBytes + 1, 'x')); },
       "symbol"},
      {[](auto* r) { r->mutable_specs(0)->set_build_id("xyz"); }, "build_id"},
      {[](auto* r) { r->mutable_specs(0)->add_capture(static_cast<v1::Register>(99)); },
       "register"},
      {[](auto* r) { (*r->mutable_specs(0)->mutable_labels())["xolfleet.io/fleet-probe"] = "x"; },
       "reserved"},
      {[](auto* r) { r->mutable_policy()->set_canary_fraction(1.5); }, "canary_fraction"},
      {[](auto* r) { r->mutable_policy()->set_canary_fraction(-0.1); }, "canary_fraction"},
      {[](auto* r) {
         *r->mutable_specs(0)->mutable_ttl() = ToDurationProto(absl::Seconds(1u << 30));
       },
       "ttl"},
      {[](auto* r) {
         auto* s = r->add_specs();
         *s = r->specs(0);
         *s->mutable_ttl() = ToDurationProto(absl::Seconds(5));
       },
       "same ttl"},
      {[](auto* r) {
         *r->mutable_policy()->mutable_canary_timeout() = ToDurationProto(absl::Minutes(61));
       },
       "policy.canary_timeout 1h1m exceeds the limit 1h"},
      {[](auto* r) {
         *r->mutable_policy()->mutable_canary_soak() = ToDurationProto(-absl::Seconds(1));
       },
       "policy.canary_soak is negative"},
      {[](auto* r) { r->clear_selector(); }, "selector"},
      {[](auto* r) {
         for (int i = 0; i < kMaxSpecsPerSet; ++i) *r->add_specs() = r->specs(0);
       },
       "limit"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    v1::FleetAttachRequest r = Good();
    cases[i].mutate(&r);
    absl::Status s = ValidateAttach(r);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << "case " << i;
    EXPECT_NE(s.message().find(cases[i].needle), std::string::npos)
        << "case " << i << ": " << s.message();
  }
}

// The failing spec is named for programs too (google.rpc.BadRequest at the gRPC edge):
// the field of the spec at fault, and nothing for a request-wide mistake.
TEST(Validate, BadSpecIsNamedAsAFieldViolation) {
  v1::FleetAttachRequest r = Good();
  *r.add_specs() = r.specs(0);
  *r.add_specs() = r.specs(0);
  r.mutable_specs(1)->set_binary_path("relative/path");
  std::vector<FieldViolation> v = FieldViolations(ValidateAttach(r));
  ASSERT_EQ(v.size(), 1u);
  EXPECT_EQ(v[0].field, "specs[1]");
  EXPECT_NE(v[0].description.find("absolute"), std::string::npos) << v[0].description;

  r = Good();
  *r.add_specs() = r.specs(0);
  *r.mutable_specs(1)->mutable_ttl() = ToDurationProto(absl::Seconds(5));
  v = FieldViolations(ValidateAttach(r));
  ASSERT_EQ(v.size(), 1u);
  EXPECT_EQ(v[0].field, "specs[1].ttl");

  r = Good();
  r.mutable_policy()->set_canary_fraction(2);
  EXPECT_TRUE(FieldViolations(ValidateAttach(r)).empty());
}

TEST(Validate, SetIds) {
  google::protobuf::RepeatedPtrField<std::string> ids;
  EXPECT_FALSE(ValidateSetIds(ids, false).ok());
  EXPECT_TRUE(ValidateSetIds(ids, true).ok());
  *ids.Add() = "ps-1";
  EXPECT_TRUE(ValidateSetIds(ids, false).ok());
  *ids.Add() = "ps-1";
  EXPECT_FALSE(ValidateSetIds(ids, false).ok());
  ids.Clear();
  *ids.Add() = "../x";
  EXPECT_FALSE(ValidateSetIds(ids, false).ok());
}

TEST(Validate, CaptureNeedsCapability) {
  v1::FleetAttachRequest r = Good();
  EXPECT_FALSE(CapturesRegisters(r));
  r.mutable_specs(0)->add_capture(v1::REGISTER_RDI);
  EXPECT_TRUE(CapturesRegisters(r));
}

}  // namespace
}  // namespace xolfleet::controller
