depth_realtime_add_module(auth_jwt ${CMAKE_CURRENT_LIST_DIR}/auth_jwt.cc ${CMAKE_CURRENT_LIST_DIR}/token.cc ${CMAKE_CURRENT_LIST_DIR}/expiry.cc)
target_link_libraries(auth_jwt PRIVATE PkgConfig::JWT OpenSSL::Crypto)
