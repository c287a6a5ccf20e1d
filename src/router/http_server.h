// http_server.h — the router's HTTP/JSON front end (cpp-httplib, nlohmann-json).
//
// Endpoints (full contract, examples and every limit: docs/api.md, section HTTP):
//   POST /v1/wallet/balance_transfer   {"from_account", "to_account", "amount",
//                                       "currency", "transaction_id"[, "mode"]}
//                                      -> TRANSFER from to <minor units> currency txid
//   GET  /v1/wallet/balance/{account}  -> BALANCE account
//   GET  /metrics                      Prometheus text (metrics.h)
//   GET  /healthz                      200 with a partition map and a live shard, else 503
// Every error is JSON: {"error": {"code": "INSUFFICIENT_FUNDS", "message": "..."}}.
// Codes are the wire names of common/result_code.h when the router or a shard
// refused the call, or one of the HTTP-only codes (BAD_JSON, MISSING_FIELD, ...).
// HTTP status by class: malformed 400, unauthorized 401, unknown path 404, wrong
// method 405, rejected by the ledger 409 (UNKNOWN_ACCOUNT on GET balance: 404;
// CROSS_SHARD_UNSUPPORTED: 422), body too large 413, retry later 503, no reply in
// time 504 (outcome unknown: retry with the same transaction_id).
//
// Threading: the server has its own threads (cpp-httplib's accept thread and a pool
// of worker_threads). A worker turns a request into a router call, hands it to the
// router's EventLoop with EventLoop::Post, and waits for the callback at most
// request_timeout_ms. Router::Execute and Router::stats() are only ever called on
// the loop thread. The loop must be running for requests to be answered (504
// otherwise).
//
// Example:
//   HttpServerOptions options;
//   options.port = 8080;
//   options.password = "secret";   // then: Authorization: Bearer secret
//   auto server = HttpServer::Start(loop.get(), &router, options);
//   if (!server.ok()) return server.status();
//   LogInfo("HTTP on port ", (*server)->port());
//   ...
//   (*server)->Stop();             // or destroy it
//
// Ownership: the server borrows the loop and the router; both must outlive it, and
// the router must also outlive the loop's queue of posted tasks (a call posted just
// before Stop() may still run on the loop after the server is gone; its reply is
// then dropped).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/event_loop.h"
#include "router/metrics.h"
#include "router/router.h"

namespace wallet::router {

struct HttpServerOptions {
  // Address to listen on: loopback by default; "0.0.0.0" to serve other hosts.
  std::string bind_address = "127.0.0.1";
  // TCP port; 0 picks a free one (see HttpServer::port()).
  int port = 0;
  // When not empty, every endpoint but /healthz requires
  // "Authorization: Bearer <password>" (401 UNAUTHORIZED otherwise).
  std::string password;

  // Worker threads; each serves one connection at a time (keep-alive included).
  size_t worker_threads = 8;
  // Accepted connections waiting for a worker; past it the accept thread stops
  // accepting until one is taken (new ones wait in the kernel's listen backlog).
  size_t max_queued_connections = 256;
  // Request bodies above this are refused with 413 PAYLOAD_TOO_LARGE.
  size_t max_body_bytes = 64 * 1024;
  // How long a worker waits for the router's reply: 504 TIMEOUT after it.
  int64_t request_timeout_ms = 5000;
  // How long /metrics and /healthz wait for Router::stats() on the loop thread.
  int64_t stats_timeout_ms = 1000;
  // Socket timeouts for reading a request and writing a response.
  int64_t socket_read_timeout_ms = 5000;
  int64_t socket_write_timeout_ms = 5000;
  // An idle keep-alive connection is closed after this, and after this many requests.
  int64_t keep_alive_timeout_s = 5;
  size_t keep_alive_max_requests = 100;
};

class HttpServer {
 public:
  // Binds options.bind_address:options.port and starts serving on the server's own
  // threads. InvalidArgument for bad options, Unavailable when the address cannot
  // be bound (port in use). `loop` and `router` must outlive the server.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(EventLoop* loop, Router* router,
                                                           const HttpServerOptions& options);

  // Stops (see Stop()).
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Closes the listening socket, lets the requests in progress finish (each within
  // its timeouts) and joins every server thread. Idempotent; not from a handler.
  void Stop();

  // The port actually bound (the chosen one when options.port was 0).
  int port() const;

  // The HTTP counters behind /metrics (for tests and for the router's INFO).
  const HttpMetrics& metrics() const;

 private:
  class Impl;
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace wallet::router
