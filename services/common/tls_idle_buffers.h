// OpenSSL keeps a read and a write record buffer (about 17 KiB each) per TLS connection
// for as long as the connection lives. With SSL_MODE_RELEASE_BUFFERS it frees them
// whenever they are empty, i.e. between records: for a server holding thousands of mostly
// idle connections (the controller: one per agent) that is a third of the memory per
// connection (bench/fleet/results.txt).
//
// gRPC creates its SSL_CTX objects itself and offers no way to set a mode on them. Linking
// this library into a binary (alwayslink) defines SSL_CTX_new in the executable; the
// dynamic linker binds every library's SSL_CTX_new to it (an executable's definitions come
// first in symbol lookup), and it calls OpenSSL's and sets the mode on the new context.
// Nothing else changes: the buffers are allocated again when a record arrives or is sent.
#ifndef XOLFLEET_SERVICES_COMMON_TLS_IDLE_BUFFERS_H_
#define XOLFLEET_SERVICES_COMMON_TLS_IDLE_BUFFERS_H_

#include <cstdint>

#include "absl/status/status.h"

namespace xolfleet::tls {

// OK when SSL_CTX_new as the process resolves it is this library's and a new context has
// SSL_MODE_RELEASE_BUFFERS; else why not (e.g. libssl was loaded with RTLD_DEEPBIND).
absl::Status CheckIdleBuffersReleased();

// How many SSL_CTX objects were made with the mode set, by anyone in the process (gRPC
// makes one per credentials' handshaker factory).
uint64_t ContextsWithIdleBuffersReleased();

}  // namespace xolfleet::tls

#endif  // XOLFLEET_SERVICES_COMMON_TLS_IDLE_BUFFERS_H_
