// What the daemon exports to modules: the public API, nothing else.
#pragma once
#define DR_API __attribute__((visibility("default")))
