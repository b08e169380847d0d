#include "sio/adapter.h"

#include <cstring>

#include "eio/session.h"

namespace dr::sio {
namespace {

void put_u32(std::string& out, uint32_t v) { out.append(reinterpret_cast<const char*>(&v), 4); }
void put_str(std::string& out, std::string_view s) {
  put_u32(out, uint32_t(s.size()));
  out.append(s);
}
void put_list(std::string& out, const std::vector<std::string>& l) {
  put_u32(out, uint32_t(l.size()));
  for (auto& s : l) put_str(out, s);
}

struct Reader {
  std::string_view in;
  bool ok = true;
  uint32_t u32() {
    if (in.size() < 4) {
      ok = false;
      return 0;
    }
    uint32_t v;
    memcpy(&v, in.data(), 4);
    in.remove_prefix(4);
    return v;
  }
  std::string str() {
    uint32_t n = u32();
    if (!ok || in.size() < n) {
      ok = false;
      return {};
    }
    std::string s(in.substr(0, n));
    in.remove_prefix(n);
    return s;
  }
  std::string_view view() {
    uint32_t n = u32();
    if (!ok || in.size() < n) {
      ok = false;
      return {};
    }
    std::string_view s = in.substr(0, n);
    in.remove_prefix(n);
    return s;
  }
  std::vector<std::string> list() {
    uint32_t n = u32();
    std::vector<std::string> l;
    for (uint32_t i = 0; ok && i < n; i++) l.push_back(str());
    return l;
  }
};

}  // namespace

BroadcastHeader& BroadcastHeader::operator=(std::string_view header) {
  message_ = eio::make_text(eio::PacketType::Message, header);
  return *this;
}

BroadcastHeader BroadcastHeader::of_message(std::string message) {
  BroadcastHeader h;
  auto m = std::make_shared<eio::OutPacket>();
  m->data = std::move(message);
  h.message_ = std::move(m);
  return h;
}

std::string_view BroadcastHeader::view() const {
  return message_ && !message_->data.empty() ? std::string_view(message_->data).substr(1) : std::string_view();
}

std::string EncodedBroadcast::serialize() const {
  std::string out;
  size_t size = 4 * 7 + opts.nsp.size() + header.size() + batch_item.size();
  for (auto* list : {&opts.rooms, &opts.except, &attachments})
    for (auto& s : *list) size += 4 + s.size();
  out.reserve(size);  // one allocation, not one per doubling
  put_str(out, opts.nsp);
  put_list(out, opts.rooms);
  put_list(out, opts.except);
  put_u32(out, (opts.is_volatile ? 1u : 0u));
  put_str(out, header);
  put_list(out, attachments);
  put_str(out, batch_item);
  return out;
}

bool EncodedBroadcast::parse(std::string_view bytes) {
  Reader r{bytes};
  opts.nsp = r.str();
  opts.rooms = r.list();
  opts.except = r.list();
  opts.is_volatile = r.u32() & 1u;
  header = r.view();
  attachments = r.list();
  batch_item = r.str();
  return r.ok && r.in.empty();
}

void EncodedBroadcast::assign_options(const BroadcastOptions& from) {
  static_assert(sizeof(BroadcastOptions) == sizeof(std::string) + 2 * sizeof(std::vector<std::string>) + 8,
                "a new field of BroadcastOptions: copy it here too");
  opts.nsp = from.nsp;
  opts.rooms.assign(from.rooms.begin(), from.rooms.end());
  opts.except.assign(from.except.begin(), from.except.end());
  opts.is_volatile = from.is_volatile;
  opts.local = from.local;
}

void EncodedBroadcast::release() {
  header = BroadcastHeader();
  attachments.clear();
  batch_item.clear();
  offset.clear();
  data = Json();
}

void LocalAdapter::broadcast(const EncodedBroadcast& b) {
  // The sibling workers first (the pipe write leaves now): their share of the
  // fan-out runs while this worker writes its own.
  if (!b.opts.local && relay_) relay_(b.serialize());
  deliver_(b);
}

void LocalAdapter::on_remote(std::string_view bytes) {
  EncodedBroadcast b;
  if (b.parse(bytes)) deliver_(b);
}

}  // namespace dr::sio
