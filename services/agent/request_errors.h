// A server interceptor that gives requests gRPC could not parse a precise error.
//
// gRPC C++ answers a request whose bytes do not parse as the method's message (in practice: a
// proto3 `string` field holding invalid UTF-8, such as a path with Latin-1 bytes) with INTERNAL and
// an empty message, before any handler runs. That reads as an agent bug and says nothing to the
// caller; the request is the problem, so the status becomes INVALID_ARGUMENT with the reason.
#ifndef XOLFLEET_SERVICES_AGENT_REQUEST_ERRORS_H_
#define XOLFLEET_SERVICES_AGENT_REQUEST_ERRORS_H_

#include <grpcpp/support/server_interceptor.h>

#include <memory>
#include <vector>

namespace xolfleet {

class UnparsableRequestInterceptorFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override;
};

// For ServerBuilder::experimental().SetInterceptorCreators().
std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
RequestErrorInterceptors();

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_AGENT_REQUEST_ERRORS_H_
