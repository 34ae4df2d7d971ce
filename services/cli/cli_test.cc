// xolctl's argument parsing, registry and table output (no agent needed).
#include "services/cli/cli.h"

#include <sstream>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "services/common/build_info.h"

namespace xolfleet::cli {
namespace {

TEST(Args, ValuesBooleansPositionalsAndRepeats) {
  absl::StatusOr<Args> a = Args::Parse({"/bin/x:f", "--pid=12", "--capture", "rdi", "--capture=rsi",
                                        "--json", "/bin/y:g+0x4", "--all_functions=/lib/z"},
                                       {"pid", "capture", "all-functions"}, {"json"});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->positional(), (std::vector<std::string>{"/bin/x:f", "/bin/y:g+0x4"}));
  EXPECT_EQ(a->Get("pid"), "12");
  EXPECT_EQ(a->GetAll("capture"), (std::vector<std::string>{"rdi", "rsi"}));
  EXPECT_TRUE(a->Has("json"));
  EXPECT_EQ(a->Get("all-functions"), "/lib/z");  // '_' and '-' are the same
  EXPECT_FALSE(a->Has("missing"));
  EXPECT_EQ(a->GetOr("missing", "d"), "d");
}

TEST(Args, Errors) {
  EXPECT_FALSE(Args::Parse({"--nope"}, {}, {}).ok());
  EXPECT_FALSE(Args::Parse({"--pid"}, {"pid"}, {}).ok());      // needs a value
  EXPECT_FALSE(Args::Parse({"--json=x"}, {}, {"json"}).ok());  // takes none
  absl::StatusOr<Args> a = Args::Parse({"--", "--not-an-option"}, {}, {});
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->positional(), std::vector<std::string>{"--not-an-option"});
}

TEST(Table, AlignsColumns) {
  Table t({"ID", "PLACEMENT"});
  t.Add({"p1", "EMULATED"});
  t.Add({"p100", "SINGLE_STEP"});
  std::ostringstream out;
  t.Print(out);
  EXPECT_EQ(out.str(),
            "ID    PLACEMENT\n"
            "p1    EMULATED\n"
            "p100  SINGLE_STEP\n");
}

TEST(Main, UnknownCommandAndOptionAreUsageErrors) {
  std::ostringstream out, err;
  EXPECT_EQ(Main({"frobnicate"}, out, err), 2);
  EXPECT_NE(err.str().find("unknown command"), std::string::npos);
  EXPECT_EQ(Main({}, out, err), 2);
}

TEST(Main, CommandsRegisterThemselves) {
  Registry::Get().Add(Command{"test-echo", "echo", "test-echo ARGS", {"x"}, {"y"}, [](Context& c) {
                                c.out() << c.args().positional().size() << " "
                                        << c.args().GetOr("x", "-") << " " << c.args().Has("y")
                                        << " " << c.json() << "\n";
                                return 7;
                              }});
  std::ostringstream out, err;
  EXPECT_EQ(Main({"--json", "test-echo", "a", "--x", "1", "b", "--y"}, out, err), 7);
  EXPECT_EQ(out.str(), "2 1 1 1\n");
  std::ostringstream out2, err2;
  EXPECT_EQ(Main({"test-echo", "--z"}, out2, err2), 2);
  EXPECT_NE(err2.str().find("unknown option --z"), std::string::npos);
}

TEST(Main, VersionNamesTheReleaseAndWorksBeforeAnyCommand) {
  std::ostringstream out, err;
  EXPECT_EQ(Main({"--version"}, out, err), 0);
  EXPECT_EQ(out.str().rfind(absl::StrCat("xolctl ", BuildVersion()), 0), 0u) << out.str();
  EXPECT_FALSE(BuildVersion().empty());
}

}  // namespace
}  // namespace xolfleet::cli
