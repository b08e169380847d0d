#include "http/compress.h"

#include <zlib.h>

#include <memory>

namespace dr::compress {
namespace {

struct DeflateEnd {
  void operator()(z_stream* z) const { deflateEnd(z); }
};
struct InflateEnd {
  void operator()(z_stream* z) const { inflateEnd(z); }
};

}  // namespace

std::string deflate(std::string_view in, int level, Format f) {
  z_stream z{};
  int bits = f == Format::Raw ? -15 : f == Format::Gzip ? 31 : 15;
  if (deflateInit2(&z, level, Z_DEFLATED, bits, 8, Z_DEFAULT_STRATEGY) != Z_OK) return {};
  std::unique_ptr<z_stream, DeflateEnd> guard(&z);
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

bool inflate_message(std::string_view in, uint64_t max_out, std::string& out) {
  z_stream z{};
  if (inflateInit2(&z, -15) != Z_OK) return false;
  std::unique_ptr<z_stream, InflateEnd> guard(&z);
  std::string data(in);
  data.append("\0\0\xff\xff", 4);
  z.next_in = reinterpret_cast<Bytef*>(data.data());
  z.avail_in = uInt(data.size());
  out.clear();
  char chunk[16384];
  for (;;) {
    z.next_out = reinterpret_cast<Bytef*>(chunk);
    z.avail_out = sizeof chunk;
    int rc = ::inflate(&z, Z_SYNC_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) return false;
    out.append(chunk, sizeof chunk - z.avail_out);
    if (out.size() > max_out) return false;  // a small message must not inflate into a huge one
    if (rc == Z_STREAM_END || (z.avail_in == 0 && z.avail_out != 0)) return true;
    if (rc == Z_BUF_ERROR && z.avail_in == 0) return true;
  }
}

}  // namespace dr::compress
