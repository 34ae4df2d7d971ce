#include "services/common/enum_names.h"

#include "gtest/gtest.h"
#include "xolfleet/v1/agent.pb.h"
#include "xolfleet/v1/common.pb.h"
#include "xolfleet/v1/controller.pb.h"

namespace xolfleet {
namespace {

namespace v1 = ::xolfleet::v1;

TEST(ShortName, DropsTheEnumsPrefix) {
  EXPECT_EQ(ShortName(v1::PLACEMENT_EMULATED), "EMULATED");
  EXPECT_EQ(ShortName(v1::PLACEMENT_BOOSTED_RIPREL), "BOOSTED_RIPREL");
  EXPECT_EQ(ShortName(v1::PROBE_STATE_ATTACHED), "ATTACHED");
  EXPECT_EQ(ShortName(v1::BUDGET_STATE_THROTTLED), "THROTTLED");
  EXPECT_EQ(ShortName(v1::SET_STATE_FAILED), "FAILED");
  EXPECT_EQ(ShortName(v1::ROLLOUT_STATE_ROLLED_BACK), "ROLLED_BACK");
  EXPECT_EQ(ShortName(v1::AGENT_HEALTH_UP), "UP");
  EXPECT_EQ(ShortName(v1::REGISTER_EFLAGS), "EFLAGS");
  EXPECT_EQ(ShortName(v1::ATTACH_PHASE_LINKING), "LINKING");
  EXPECT_EQ(ShortName(v1::PLACEMENT_UNSPECIFIED), "UNSPECIFIED");
}

TEST(ShortName, UndefinedNumberIsItsDigits) {
  EXPECT_EQ(ShortName(static_cast<v1::Placement>(42)), "42");
}

TEST(ShortName, EveryValueOfEveryEnumHasItsTypePrefix) {
  // The buf ENUM_VALUE_PREFIX rule, checked over the whole API: a value added without the
  // prefix would print with it in tables (ShortName could not strip it) and fail here.
  for (const char* file :
       {"xolfleet/v1/common.proto", "xolfleet/v1/agent.proto", "xolfleet/v1/controller.proto"}) {
    const google::protobuf::FileDescriptor* f =
        google::protobuf::DescriptorPool::generated_pool()->FindFileByName(file);
    ASSERT_NE(f, nullptr) << file;
    std::vector<const google::protobuf::EnumDescriptor*> enums;
    for (int i = 0; i < f->enum_type_count(); ++i) enums.push_back(f->enum_type(i));
    for (int i = 0; i < f->message_type_count(); ++i) {
      for (int j = 0; j < f->message_type(i)->enum_type_count(); ++j) {
        enums.push_back(f->message_type(i)->enum_type(j));
      }
    }
    for (const google::protobuf::EnumDescriptor* e : enums) {
      // UpperSnake(e->name()) + "_": "RolloutState" -> "ROLLOUT_STATE_".
      std::string prefix;
      for (char c : e->name()) {
        if (isupper(static_cast<unsigned char>(c)) && !prefix.empty()) prefix += '_';
        prefix += static_cast<char>(toupper(static_cast<unsigned char>(c)));
      }
      prefix += '_';
      ASSERT_NE(e->FindValueByNumber(0), nullptr) << e->full_name();
      EXPECT_EQ(e->FindValueByNumber(0)->name(), prefix + "UNSPECIFIED") << e->full_name();
      for (int k = 0; k < e->value_count(); ++k) {
        EXPECT_EQ(e->value(k)->name().rfind(prefix, 0), 0u) << e->value(k)->full_name();
      }
    }
  }
}

TEST(ParseShortName, TakesShortOrFullNamesInAnyCase) {
  v1::Register r = v1::REGISTER_UNSPECIFIED;
  EXPECT_TRUE(ParseShortName("rdi", &r));
  EXPECT_EQ(r, v1::REGISTER_RDI);
  EXPECT_TRUE(ParseShortName("REGISTER_R15", &r));
  EXPECT_EQ(r, v1::REGISTER_R15);
  v1::Placement p = v1::PLACEMENT_UNSPECIFIED;
  EXPECT_TRUE(ParseShortName("single_step", &p));
  EXPECT_EQ(p, v1::PLACEMENT_SINGLE_STEP);
  EXPECT_FALSE(ParseShortName("xmm0", &r));
  EXPECT_FALSE(ParseShortName("", &r));
}

}  // namespace
}  // namespace xolfleet
