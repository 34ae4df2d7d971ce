// Short names of the API's enum values, for people and metric labels.
//
// The API's enum values carry their type as prefix (PLACEMENT_EMULATED, PROBE_STATE_ATTACHED,
// ROLLOUT_STATE_COMPLETE), so that values of different enums never collide in the package's
// namespace. xolctl's tables, log lines, status messages and Prometheus labels print the value
// without that prefix ("EMULATED", "ATTACHED", "COMPLETE"); xolctl --json prints the full
// proto names (protobuf's JSON mapping), so its output parses back into the messages.
#ifndef XOLFLEET_SERVICES_COMMON_ENUM_NAMES_H_
#define XOLFLEET_SERVICES_COMMON_ENUM_NAMES_H_

#include <string>

#include "google/protobuf/generated_enum_reflection.h"

namespace xolfleet {

// The value's name without its enum's prefix (the prefix is what precedes "UNSPECIFIED" in the
// name of value 0). A number the enum does not define comes back as its decimal digits.
std::string ShortEnumName(const google::protobuf::EnumDescriptor* type, int value);

template <typename E>
std::string ShortName(E value) {
  return ShortEnumName(google::protobuf::GetEnumDescriptor<E>(), static_cast<int>(value));
}

// The value of `type` whose short name (or full name) is `name`, compared without regard to
// case; false when there is none.
bool ParseShortEnumName(const google::protobuf::EnumDescriptor* type, const std::string& name,
                        int* value);

template <typename E>
bool ParseShortName(const std::string& name, E* value) {
  int v = 0;
  if (!ParseShortEnumName(google::protobuf::GetEnumDescriptor<E>(), name, &v)) return false;
  *value = static_cast<E>(v);
  return true;
}

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_COMMON_ENUM_NAMES_H_
