depth_realtime_add_module(chat ${CMAKE_CURRENT_LIST_DIR}/chat.cc)
target_link_libraries(chat PRIVATE dr_app)
