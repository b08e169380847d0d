depth_realtime_add_module(admin ${CMAKE_CURRENT_LIST_DIR}/admin.cc ${CMAKE_CURRENT_LIST_DIR}/admin_ui.cc
  ${CMAKE_CURRENT_LIST_DIR}/ui_login.cc ${CMAKE_CURRENT_LIST_DIR}/ui_static.cc)
# crypt_rn (libxcrypt) checks the Admin UI's bcrypt password hash.
target_link_libraries(admin PRIVATE dr_app crypt)
