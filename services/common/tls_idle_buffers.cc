#include "services/common/tls_idle_buffers.h"

#include <dlfcn.h>
#include <openssl/ssl.h>

#include <atomic>

#include "absl/strings/str_cat.h"

namespace {

std::atomic<uint64_t> contexts{0};

using SslCtxNew = SSL_CTX* (*)(const SSL_METHOD*);

SslCtxNew OpenSslCtxNew() {
  static const SslCtxNew next = reinterpret_cast<SslCtxNew>(dlsym(RTLD_NEXT, "SSL_CTX_new"));
  return next;
}

}  // namespace

// See tls_idle_buffers.h. Same signature as OpenSSL's, which it calls.
extern "C" SSL_CTX* SSL_CTX_new(const SSL_METHOD* method) {
  SslCtxNew next = OpenSslCtxNew();
  if (next == nullptr) return nullptr;  // libssl not loaded: no caller can get here
  SSL_CTX* ctx = next(method);
  if (ctx != nullptr) {
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    contexts.fetch_add(1, std::memory_order_relaxed);
  }
  return ctx;
}

namespace xolfleet::tls {

absl::Status CheckIdleBuffersReleased() {
  void* resolved = dlsym(RTLD_DEFAULT, "SSL_CTX_new");
  if (resolved != reinterpret_cast<void*>(&SSL_CTX_new)) {
    return absl::FailedPreconditionError(
        "SSL_CTX_new does not resolve to the idle-buffer wrapper (is the library linked "
        "with alwayslink into the executable?)");
  }
  if (OpenSslCtxNew() == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("OpenSSL's SSL_CTX_new not found: ", dlerror()));
  }
  SSL_CTX* ctx = SSL_CTX_new(TLS_method());
  if (ctx == nullptr) return absl::InternalError("SSL_CTX_new failed");
  const bool released = (SSL_CTX_get_mode(ctx) & SSL_MODE_RELEASE_BUFFERS) != 0;
  SSL_CTX_free(ctx);
  if (!released) return absl::InternalError("a new SSL_CTX lacks SSL_MODE_RELEASE_BUFFERS");
  return absl::OkStatus();
}

uint64_t ContextsWithIdleBuffersReleased() { return contexts.load(std::memory_order_relaxed); }

}  // namespace xolfleet::tls
