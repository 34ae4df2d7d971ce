// xolctl: the xolfleet command line. Commands register themselves (see cli.h).
#include <iostream>
#include <string>
#include <vector>

#include "services/cli/cli.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  return xolfleet::cli::Main(args, std::cout, std::cerr);
}
