#include "core/tls_context.h"

#include <openssl/err.h>

namespace dr::tls {
namespace {

std::string last_error() {
  unsigned long e = ERR_get_error();
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return buf;
}

}  // namespace

Context make_context(const CoreConf& conf, std::string& err) {
  Context ctx(SSL_CTX_new(TLS_server_method()), CtxDeleter());
  if (!ctx) {
    err = "cannot create a TLS context: " + last_error();
    return nullptr;
  }
  // Modern defaults: TLS 1.2 and 1.3 only, server cipher preference, no
  // compression, no renegotiation.
  SSL_CTX_set_min_proto_version(ctx.get(), conf.ssl_tls13_only ? TLS1_3_VERSION : TLS1_2_VERSION);
  SSL_CTX_set_options(ctx.get(), SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_set_mode(ctx.get(), SSL_MODE_RELEASE_BUFFERS);  // idle connections hold no TLS buffers
  if (!conf.ssl_ciphers.empty() && SSL_CTX_set_cipher_list(ctx.get(), conf.ssl_ciphers.c_str()) != 1) {
    err = "invalid ssl_ciphers \"" + conf.ssl_ciphers + "\": " + last_error();
    return nullptr;
  }
  if (SSL_CTX_use_certificate_chain_file(ctx.get(), conf.ssl_certificate.c_str()) != 1) {
    err = "cannot load ssl_certificate \"" + conf.ssl_certificate + "\": " + last_error();
    return nullptr;
  }
  if (SSL_CTX_use_PrivateKey_file(ctx.get(), conf.ssl_certificate_key.c_str(), SSL_FILETYPE_PEM) != 1) {
    err = "cannot load ssl_certificate_key \"" + conf.ssl_certificate_key + "\": " + last_error();
    return nullptr;
  }
  if (SSL_CTX_check_private_key(ctx.get()) != 1) {
    err = "ssl_certificate_key does not match ssl_certificate: " + last_error();
    return nullptr;
  }
  return ctx;
}

}  // namespace dr::tls
