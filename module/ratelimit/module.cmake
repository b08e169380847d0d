dr_module(ratelimit ${CMAKE_CURRENT_LIST_DIR}/ratelimit.cc)
