// self_test_server.h — a trivial RESP2 server for measuring the load generator's own
// ceiling (`wallet-loadgen --self_test_server`): it answers every command at once,
// with no work behind it, so the rate the generator reaches against it is the most
// it can drive from this machine with its settings.
//
// Answers: TRANSFER.BATCH [MODE m] n ...  → an array of n +OK; BALANCE → [0, 0,
// "USD"]; TX.INDOUBT → an empty array; PING → +PONG; anything else → +OK.
// One epoll loop (common/event_loop.h) on a thread of its own; requests parsed with
// common/resp.h. Listens on 127.0.0.1.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>

#include "absl/status/statusor.h"
#include "common/event_loop.h"

namespace wallet::loadgen {

class TrivialRespServer {
 public:
  // Listens on 127.0.0.1:port (0: a free port) and starts serving.
  static absl::StatusOr<std::unique_ptr<TrivialRespServer>> Start(uint16_t port);
  ~TrivialRespServer();  // stops the loop, closes every socket
  TrivialRespServer(const TrivialRespServer&) = delete;
  TrivialRespServer& operator=(const TrivialRespServer&) = delete;

  uint16_t port() const { return port_; }
  uint64_t commands() const { return commands_.load(std::memory_order_relaxed); }

 private:
  struct Connection;
  TrivialRespServer() = default;
  void Accept();
  void Serve(Connection* connection);
  void Drop(Connection* connection);

  std::unique_ptr<EventLoop> loop_;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  EventLoop::WatchId listen_watch_ = 0;
  std::thread thread_;
  std::atomic<uint64_t> commands_{0};
  struct Connections;
  std::unique_ptr<Connections> connections_;
};

}  // namespace wallet::loadgen
