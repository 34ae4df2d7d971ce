// The client channel settings of the agent link (xolfleet.v1.AgentLink): the agent and the
// agent simulator dial the controller with the same ones.
#ifndef XOLFLEET_SERVICES_COMMON_LINK_CHANNEL_H_
#define XOLFLEET_SERVICES_COMMON_LINK_CHANNEL_H_

#include <grpcpp/support/channel_arguments.h>

namespace xolfleet {

// Keepalive pings every 20 s (10 s to answer, also without calls in flight), 64 MiB
// messages (a desired state with many sets), and fast connect retries: the link does its
// own backoff, so a connect attempt should fail fast.
grpc::ChannelArguments AgentLinkChannelArguments();

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_COMMON_LINK_CHANNEL_H_
