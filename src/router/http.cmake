# http.cmake — the router's HTTP/JSON front end (wallet_router_http) and its unit
# tests. Included from src/router/CMakeLists.txt:
#   include(${CMAKE_CURRENT_LIST_DIR}/http.cmake)
#   target_link_libraries(wallet-router PRIVATE wallet_router_http)
# Paths are relative to this file, so it works from any including directory.

# libcpp-httplib-dev: Debian ships cpp-httplib split into a header and a compiled
# library; its pkg-config file carries the feature defines (OpenSSL, zlib, brotli)
# the library was built with, which the header's class layouts depend on. Always
# use them (never include <httplib.h> without these compile definitions).
if(NOT TARGET PkgConfig::CPPHTTPLIB)
  pkg_check_modules(CPPHTTPLIB REQUIRED IMPORTED_TARGET GLOBAL cpp-httplib)
endif()
# nlohmann-json3-dev: header-only, with a CMake package.
if(NOT TARGET nlohmann_json::nlohmann_json)
  find_package(nlohmann_json 3.10 REQUIRED CONFIG)
  set_target_properties(nlohmann_json::nlohmann_json PROPERTIES IMPORTED_GLOBAL TRUE)
endif()

# wallet_router_http: HttpServer (http_server.*), Prometheus text (metrics.*) and
# ISO 4217 minor units (currency_units.*). Codes against router.h (the Router
# interface; RouterCommandName for metric labels, defined in wallet_router).
wallet_library(wallet_router_http
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/http_server.cc
          ${CMAKE_CURRENT_LIST_DIR}/metrics.cc
          ${CMAKE_CURRENT_LIST_DIR}/currency_units.cc
  DEPS wallet_router wallet_common wallet_shardlink absl::status absl::statusor absl::strings
       absl::flat_hash_map Threads::Threads)
# Only http_server.cc includes the two libraries' headers.
target_link_libraries(wallet_router_http PRIVATE PkgConfig::CPPHTTPLIB nlohmann_json::nlohmann_json)

if(WALLET_BUILD_TESTS)
  wallet_test(currency_units_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/currency_units_test.cc
    DEPS wallet_router_http)
  # The server against a fake Router on a real EventLoop thread, called with
  # cpp-httplib's client over loopback.
  wallet_test(http_server_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/http_server_test.cc
    DEPS wallet_router_http PkgConfig::CPPHTTPLIB nlohmann_json::nlohmann_json)
endif()
