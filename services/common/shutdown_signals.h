// SIGINT and SIGTERM as the one way to stop a long-running xolfleet process: main()
// blocks them before any thread starts (every thread inherits the mask, so no thread is
// interrupted by them) and then waits for one synchronously.
#ifndef XOLFLEET_SERVICES_COMMON_SHUTDOWN_SIGNALS_H_
#define XOLFLEET_SERVICES_COMMON_SHUTDOWN_SIGNALS_H_

#include <signal.h>

namespace xolfleet {

// The set {SIGINT, SIGTERM}.
sigset_t ShutdownSignals();

// Blocks SIGINT and SIGTERM in the calling thread. Call it first in main(), before any
// thread starts.
void BlockShutdownSignals();

// Waits until SIGINT or SIGTERM arrives (blocked by BlockShutdownSignals) and returns it.
int WaitForShutdownSignal();

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_COMMON_SHUTDOWN_SIGNALS_H_
