// hiredis' reply objects from free lists (the reader's object functions).
//
// hiredis 0.14 allocates a reply object per reply and per array element, plus
// its string and its element vector: a PUBLISH that comes back to a
// subscriber is eight allocations. Replies are freed as soon as their
// callback returns, so a handful of blocks, kept per size class, serve them
// all: a warm connection parses replies without malloc. A reply's string is
// in its object's block. Replies stay plain redisReply values.
#pragma once

#include <hiredis/read.h>

#include <cstddef>

namespace dr::cluster {

// For redisReader::fn of the connections whose replies only hiredis frees
// (through the same table).
redisReplyObjectFunctions* pooled_replies();

// Blocks kept now, over every size class (for tests).
size_t pooled_reply_blocks();

}  // namespace dr::cluster
