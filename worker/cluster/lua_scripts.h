// Every Lua script the adapter sends, with its SHA1 (computed once): they go
// as EVALSHA, and the link sends a script again as EVAL when Redis answers
// NOSCRIPT (redis_link.cc). Each connection loads them all when it connects,
// so that a restarted Redis or a promoted replica (script caches are not
// replicated) answers the first EVALSHA; a NOSCRIPT then only follows a
// SCRIPT FLUSH.
//
// The writes whose order matters (a recorded broadcast, its republishing, a
// session's record) go as EVAL, their body every time: after a SCRIPT FLUSH
// an EVALSHA sent again as EVAL would run after the commands pipelined behind
// it, and a later broadcast would reach the stream and its subscribers first.
// These scripts are short; Redis finds the compiled one by the body's SHA1.
#pragma once

#include <span>
#include <string_view>

namespace dr::cluster::lua {

struct Script {
  std::string_view body;
  char sha[41];  // hex, NUL-terminated
};

// Every script (presence_lua.h, recovery_lua.h).
std::span<const Script> scripts();
// The SHA1 of one of them, by its body's address (a kXxxScript constant).
std::string_view sha(const char* body);
// The body whose SHA1 is `sha`, empty when none is.
std::string_view body_of(std::string_view sha);

}  // namespace dr::cluster::lua
