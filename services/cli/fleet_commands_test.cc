// `xolctl fleet attach` against an in-process fake FleetService on loopback (plaintext):
// the rollout's progress goes to stderr with --json too, stdout stays one JSON rollout.
#include <memory>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "services/cli/cli.h"
#include "xolfleet/v1/controller.grpc.pb.h"

namespace xolfleet::cli {
namespace {

// The rollout is in its canary stage when attached and complete on the first GetRollout.
class FakeFleet final : public v1::FleetService::Service {
 public:
  grpc::Status AttachFleet(grpc::ServerContext*, const v1::FleetAttachRequest*,
                           v1::FleetAttachResponse* resp) override {
    v1::Rollout* r = resp->mutable_rollout();
    r->set_set_id("ps-test");
    r->set_state(v1::ROLLOUT_STATE_CANARY);
    r->add_canary_nodes("node-1");
    r->set_nodes_pending(1);
    return grpc::Status::OK;
  }
  grpc::Status GetRollout(grpc::ServerContext*, const v1::GetRolloutRequest* req,
                          v1::Rollout* r) override {
    r->set_set_id(req->set_id());
    r->set_state(v1::ROLLOUT_STATE_COMPLETE);
    r->add_canary_nodes("node-1");
    r->set_nodes_attached(2);
    return grpc::Status::OK;
  }
};

class FleetAttach : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder b;
    b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    b.RegisterService(&fake_);
    server_ = b.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port_, 0);
  }
  void TearDown() override { server_->Shutdown(); }

  int Run(bool json, std::ostringstream& out, std::ostringstream& err) {
    std::vector<std::string> argv = {"fleet",
                                     absl::StrCat("--controller=127.0.0.1:", port_),
                                     "--insecure-plaintext",
                                     "attach",
                                     "--all",
                                     "--canary=0.5",
                                     "/bin/true:main"};
    if (json) argv.insert(argv.begin(), "--json");
    return Main(argv, out, err);
  }

  FakeFleet fake_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

TEST_F(FleetAttach, JsonKeepsProgressOnStderr) {
  std::ostringstream out, err;
  ASSERT_EQ(Run(true, out, err), 0) << err.str();
  EXPECT_NE(err.str().find("rollout ps-test: CANARY"), std::string::npos) << err.str();
  EXPECT_NE(err.str().find("rollout ps-test: COMPLETE"), std::string::npos) << err.str();
  // stdout: the final rollout as JSON, nothing else.
  EXPECT_EQ(out.str().rfind("{", 0), 0u) << out.str();
  EXPECT_NE(out.str().find("\"state\": \"ROLLOUT_STATE_COMPLETE\""), std::string::npos)
      << out.str();
  EXPECT_EQ(out.str().find("CANARY "), std::string::npos) << out.str();
}

TEST_F(FleetAttach, TableShowsTheSameProgress) {
  std::ostringstream out, err;
  ASSERT_EQ(Run(false, out, err), 0) << err.str();
  EXPECT_NE(err.str().find("rollout ps-test: CANARY"), std::string::npos) << err.str();
  EXPECT_NE(out.str().find("ps-test"), std::string::npos) << out.str();
}

}  // namespace
}  // namespace xolfleet::cli
