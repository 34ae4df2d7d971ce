// The probe spec's one home: its text grammar (xolctl's agent and fleet commands), its
// validation and limits (the agent, the controller and xolctl), and the fleet probe id.
//
// Grammar of a site:
//   PATH:SYMBOL            function entry
//   PATH:SYMBOL+OFFSET     OFFSET bytes into the function (decimal or 0x hex)
//   PATH:0xFILEOFFSET      a raw file offset (hex with 0x)
//   PATH@FILEOFFSET        the same (hex, 0x optional)
#ifndef XOLFLEET_SERVICES_COMMON_PROBE_SPEC_H_
#define XOLFLEET_SERVICES_COMMON_PROBE_SPEC_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "google/protobuf/map.h"
#include "xolfleet/v1/common.pb.h"

namespace xolfleet {

// Limits of one spec, the same everywhere.
inline constexpr size_t kMaxPathBytes = 4095;     // PATH_MAX - 1
inline constexpr size_t kMaxSymbolBytes = 16384;  // long C++ mangled names reach a few KiB
inline constexpr size_t kMaxLabels = 32;          // user labels (reserved ones not counted)
inline constexpr size_t kMaxReservedLabels = 4;   // set by the agent and the controller
inline constexpr size_t kMaxLabelKeyBytes = 63 + 253 + 1;  // "prefix/name", as Kubernetes
inline constexpr size_t kMaxLabelValueBytes = 256;
inline constexpr uint32_t kMaxRateLimit = 1000000000;  // events/s, exclusive
inline constexpr absl::Duration kMaxTtl = absl::Hours(30 * 24);
inline constexpr size_t kMaxBuildIdHexDigits = 128;
// A container id as runtimes print it: 64 hex digits, or a unique prefix of 12 or more.
inline constexpr size_t kMinContainerIdHexDigits = 12;
inline constexpr size_t kMaxContainerIdHexDigits = 64;
// Labels under this prefix belong to xolfleet: the fleet probe id, the owner.
inline constexpr char kReservedLabelPrefix[] = "xolfleet.io/";

enum class ReservedLabels { kRefuse, kAllow };

// INVALID_ARGUMENT naming the field, with hostile input echoed truncated.
absl::Status ValidateSpec(const v1::ProbeSpec& spec, ReservedLabels reserved);
// Empty, or kMin..kMaxContainerIdHexDigits lowercase hex digits; INVALID_ARGUMENT otherwise.
absl::Status ValidateContainerId(absl::string_view id);
absl::Status ValidateLabels(const google::protobuf::Map<std::string, std::string>& labels,
                            ReservedLabels reserved);

// The grammar above -> a spec (binary_path, symbol, offset only).
absl::StatusOr<v1::ProbeSpec> ParseSite(absl::string_view text);
// The inverse: PATH:SYMBOL, PATH:SYMBOL+0x10, PATH@0x1234.
std::string FormatSite(const v1::ProbeSpec& spec);
// "rdi", "RDI", "%rdi" -> RDI; INVALID_ARGUMENT listing the names otherwise.
absl::StatusOr<v1::Register> ParseRegister(absl::string_view name);
// "k=v,k2=v2" added to `out`; INVALID_ARGUMENT for an item that is not KEY=VALUE.
absl::Status ParseLabels(absl::string_view text,
                         google::protobuf::Map<std::string, std::string>* out);

// The fleet probe id of spec `index` of probe set `set_id`: "<set_id>/<index>".
std::string FleetProbeId(absl::string_view set_id, int index);

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_COMMON_PROBE_SPEC_H_
