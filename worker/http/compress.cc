#include "http/compress.h"

#include <zlib.h>

#include <algorithm>
#include <memory>

namespace dr::compress {
namespace {

// One deflate stream per format, reset per message: a stream's ~260 KB of
// state is allocated once per process, not once per compressed message.
struct Deflater {
  z_stream z{};
  bool ok = false;
  int level = 0;
  Deflater() = default;
  Deflater(const Deflater&) = delete;
  Deflater& operator=(const Deflater&) = delete;
  ~Deflater() {
    if (ok) deflateEnd(&z);
  }
  bool start(int bits, int lvl) {
    if (!ok) {
      ok = deflateInit2(&z, lvl, Z_DEFLATED, bits, 8, Z_DEFAULT_STRATEGY) == Z_OK;
      level = lvl;
      return ok;
    }
    if (deflateReset(&z) != Z_OK) return false;
    if (lvl != level) {
      if (deflateParams(&z, lvl, Z_DEFAULT_STRATEGY) != Z_OK) return false;
      level = lvl;
    }
    return true;
  }
};

}  // namespace

std::string deflate(std::string_view in, int level, Format f) {
  static thread_local Deflater deflaters[3];
  Deflater& d = deflaters[int(f)];
  int bits = f == Format::Raw ? -15 : f == Format::Gzip ? 31 : 15;
  if (!d.start(bits, level)) return {};
  z_stream& z = d.z;
  std::string out;
  out.resize(deflateBound(&z, uLong(in.size())) + 16);
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = uInt(in.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = uInt(out.size());
  // Raw: a sync flush ends on a byte boundary with 00 00 ff ff, which RFC 7692 drops.
  int rc = ::deflate(&z, f == Format::Raw ? Z_SYNC_FLUSH : Z_FINISH);
  if (rc != Z_OK && rc != Z_STREAM_END) return {};
  out.resize(out.size() - z.avail_out);
  if (f == Format::Raw && out.size() >= 4 && out.compare(out.size() - 4, 4, std::string("\0\0\xff\xff", 4)) == 0)
    out.resize(out.size() - 4);
  return out;
}

namespace {

// Messages stand alone (no context takeover), so one inflate stream, reset
// per message, serves the whole process: no allocation per message.
struct Inflater {
  z_stream z{};
  bool ok = inflateInit2(&z, -15) == Z_OK;
  Inflater() = default;
  Inflater(const Inflater&) = delete;
  Inflater& operator=(const Inflater&) = delete;
  ~Inflater() {
    if (ok) inflateEnd(&z);
  }
};

}  // namespace

bool inflate_message(std::string_view in, uint64_t max_out, std::string& out) {
  static thread_local Inflater inflater;
  if (!inflater.ok || inflateReset(&inflater.z) != Z_OK) return false;
  z_stream& z = inflater.z;
  // The message, then the 00 00 ff ff tail RFC 7692 strips, read in place.
  static const unsigned char tail[4] = {0, 0, 0xff, 0xff};
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = uInt(in.size());
  bool tail_given = false;
  // Inflated straight into `out`, never past the limit's first extra byte.
  const uint64_t cap = max_out + 1;
  out.clear();
  size_t have = 0;
  for (;;) {
    if (z.avail_in == 0 && !tail_given) {
      z.next_in = const_cast<Bytef*>(tail);
      z.avail_in = sizeof tail;
      tail_given = true;
    }
    if (have == out.size()) {
      uint64_t want = std::max<uint64_t>({256, uint64_t(out.size()) * 2, uint64_t(in.size()) * 4});
      out.resize(size_t(std::min(want, cap)));
    }
    z.next_out = reinterpret_cast<Bytef*>(out.data() + have);
    z.avail_out = uInt(out.size() - have);
    int rc = ::inflate(&z, Z_SYNC_FLUSH);
    have = out.size() - z.avail_out;
    if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) return false;
    if (have > max_out) return false;  // a small message must not inflate into a huge one
    if (rc == Z_STREAM_END) break;
    if (tail_given && z.avail_in == 0 && (z.avail_out != 0 || rc == Z_BUF_ERROR)) break;
  }
  out.resize(have);
  return true;
}

}  // namespace dr::compress
