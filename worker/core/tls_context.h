// The TLS server context built from the core's ssl_* directives. It lives in
// core because loading the configuration (-t, reload) builds one to check the
// certificate; the TLS sessions over it are in http/tls.h.
#pragma once

#include <openssl/ssl.h>

#include <memory>
#include <string>

#include "core/config.h"

namespace dr::tls {

struct CtxDeleter {
  void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
using Context = std::shared_ptr<SSL_CTX>;

// Server context from ssl_certificate / ssl_certificate_key / ssl_protocols /
// ssl_ciphers; null + err when a file cannot be used.
Context make_context(const CoreConf& conf, std::string& err);

}  // namespace dr::tls
