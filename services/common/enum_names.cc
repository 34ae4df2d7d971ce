#include "services/common/enum_names.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "google/protobuf/descriptor.h"

namespace xolfleet {
namespace {

absl::string_view Prefix(const google::protobuf::EnumDescriptor* type) {
  const google::protobuf::EnumValueDescriptor* zero = type->FindValueByNumber(0);
  if (zero == nullptr) return "";
  absl::string_view n = zero->name();
  if (!absl::ConsumeSuffix(&n, "UNSPECIFIED")) return "";
  return n;
}

}  // namespace

std::string ShortEnumName(const google::protobuf::EnumDescriptor* type, int value) {
  const google::protobuf::EnumValueDescriptor* v = type->FindValueByNumber(value);
  if (v == nullptr) return absl::StrCat(value);
  absl::string_view n = v->name();
  absl::ConsumePrefix(&n, Prefix(type));
  return std::string(n);
}

bool ParseShortEnumName(const google::protobuf::EnumDescriptor* type, const std::string& name,
                        int* value) {
  std::string upper = absl::AsciiStrToUpper(name);
  const google::protobuf::EnumValueDescriptor* v = type->FindValueByName(upper);
  if (v == nullptr) v = type->FindValueByName(absl::StrCat(Prefix(type), upper));
  if (v == nullptr) return false;
  *value = v->number();
  return true;
}

}  // namespace xolfleet
