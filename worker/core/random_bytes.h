// Cryptographically random bytes for ids (Engine.IO sids, Socket.IO socket
// ids, cluster request ids), drawn from a per-thread buffer that OpenSSL's
// RAND_bytes refills 4 KB at a time: a connect takes ~4 draws of 6-20 bytes,
// and each RAND_bytes call has a fixed cost (DRBG lookup, locking, reseed
// checks) far above copying the bytes. A forked child discards the buffer it
// inherited, so a worker never hands out the bytes its master or a sibling
// also holds.
#pragma once

#include <cstddef>
#include <cstdint>

namespace dr {

// Fills out[0..n) (any n). Aborts if OpenSSL cannot produce random bytes:
// an id from a failed generator must never be used.
void random_bytes(uint8_t* out, size_t n);

}  // namespace dr
