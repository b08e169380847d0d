// An immutable text shared by reference count, in one allocation (count,
// size, characters and a NUL). std::shared_ptr<const std::string> costs two
// allocations and 48 bytes beside the text, shared_ptr<char[]> 47 bytes: per
// connection, what a socket keeps of its CONNECT's auth. One worker thread
// owns it: the count is not atomic.
#pragma once

#include <cstdint>
#include <cstring>
#include <new>
#include <string_view>
#include <utility>

namespace dr::sio {

class SharedText {
 public:
  SharedText() = default;
  explicit SharedText(std::string_view text) {
    rep_ = static_cast<Rep*>(::operator new(sizeof(Rep) + text.size() + 1));
    rep_->refs = 1;
    rep_->size = text.size();
    memcpy(chars(), text.data(), text.size());
    chars()[text.size()] = '\0';
  }
  SharedText(const SharedText& o) noexcept : rep_(o.rep_) {
    if (rep_) rep_->refs++;
  }
  SharedText(SharedText&& o) noexcept : rep_(std::exchange(o.rep_, nullptr)) {}
  SharedText& operator=(SharedText o) noexcept {
    std::swap(rep_, o.rep_);
    return *this;
  }
  ~SharedText() {
    if (rep_ && --rep_->refs == 0) ::operator delete(rep_);
  }

  explicit operator bool() const { return rep_ != nullptr; }
  std::string_view view() const { return rep_ ? std::string_view(chars(), rep_->size) : std::string_view(); }

 private:
  struct Rep {
    uint32_t refs;
    size_t size;
  };
  char* chars() const { return reinterpret_cast<char*>(rep_ + 1); }
  Rep* rep_ = nullptr;
};

}  // namespace dr::sio
