#include "loadgen/self_test_server.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <charconv>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "common/net.h"
#include "common/resp.h"
#include "common/strings.h"

namespace wallet::loadgen {

struct TrivialRespServer::Connection {
  int fd = -1;
  EventLoop::WatchId watch = 0;
  std::string input;
  std::string output;
  size_t sent = 0;
  resp::RequestParser parser{resp::Limits{}};
  bool want_write = false;
};

struct TrivialRespServer::Connections {
  absl::flat_hash_map<Connection*, std::unique_ptr<Connection>> open;
};

absl::StatusOr<std::unique_ptr<TrivialRespServer>> TrivialRespServer::Start(uint16_t port) {
  std::unique_ptr<TrivialRespServer> server(new TrivialRespServer());
  server->connections_ = std::make_unique<Connections>();
  auto loop = EventLoop::Create();
  if (!loop.ok()) return loop.status();
  server->loop_ = *std::move(loop);
  absl::StatusOr<ListeningSocket> listening = ListenTcp("127.0.0.1", port);
  if (!listening.ok()) return listening.status();
  server->listen_fd_ = listening->fd;
  server->port_ = listening->port;
  TrivialRespServer* self = server.get();
  auto watch = server->loop_->WatchFd(server->listen_fd_, FdInterest::kRead, [self](FdReadiness) { self->Accept(); });
  if (!watch.ok()) return watch.status();
  server->listen_watch_ = *watch;
  server->thread_ = std::thread([self] { (void)self->loop_->Run(); });
  return server;
}

TrivialRespServer::~TrivialRespServer() {
  if (thread_.joinable()) {
    loop_->Stop();
    thread_.join();
  }
  if (loop_ != nullptr) {
    for (auto& [raw, connection] : connections_->open) {
      loop_->UnwatchFd(connection->watch);
      close(connection->fd);
    }
    connections_->open.clear();
    if (listen_watch_ != 0) loop_->UnwatchFd(listen_watch_);
  }
  if (listen_fd_ >= 0) close(listen_fd_);
}

void TrivialRespServer::Accept() {
  for (;;) {
    const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;  // EAGAIN, or an error the next readiness will show again
    const int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    auto connection = std::make_unique<Connection>();
    connection->fd = fd;
    Connection* raw = connection.get();
    auto watch = loop_->WatchFd(fd, FdInterest::kRead, [this, raw](FdReadiness) { Serve(raw); });
    if (!watch.ok()) {
      close(fd);
      continue;
    }
    raw->watch = *watch;
    connections_->open.emplace(raw, std::move(connection));
  }
}

namespace {

// The reply to one command.
void Answer(const std::vector<std::string_view>& args, std::string* out) {
  resp::ReplyWriter writer(out);
  const std::string_view name = args[0];
  if (EqualsIgnoreCase(name, "TRANSFER.BATCH")) {
    size_t at = 1;
    if (at < args.size() && EqualsIgnoreCase(args[at], "MODE")) at += 2;
    uint64_t n = 0;
    if (at < args.size()) std::from_chars(args[at].data(), args[at].data() + args[at].size(), n);
    writer.ArrayHeader(n);
    for (uint64_t i = 0; i < n; ++i) writer.Ok();
  } else if (EqualsIgnoreCase(name, "BALANCE")) {
    writer.ArrayHeader(3);
    writer.Integer(0);
    writer.Integer(0);
    writer.Bulk("USD");
  } else if (EqualsIgnoreCase(name, "TX.INDOUBT")) {
    writer.ArrayHeader(0);
  } else if (EqualsIgnoreCase(name, "PING")) {
    writer.SimpleString("PONG");
  } else {
    writer.Ok();
  }
}

}  // namespace

void TrivialRespServer::Serve(Connection* c) {
  char buffer[64 * 1024];
  for (;;) {
    const ssize_t n = read(c->fd, buffer, sizeof(buffer));
    if (n > 0) {
      c->input.append(buffer, static_cast<size_t>(n));
      if (static_cast<size_t>(n) < sizeof(buffer)) break;
      continue;
    }
    if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
      Drop(c);
      return;
    }
    if (errno == EINTR) continue;
    break;
  }
  size_t pos = 0;
  std::vector<std::string_view> args;
  uint64_t served = 0;
  for (;;) {
    const resp::RequestParser::Status status = c->parser.Next(c->input, &pos, &args);
    if (status == resp::RequestParser::Status::kCommand) {
      Answer(args, &c->output);
      ++served;
      continue;
    }
    if (status == resp::RequestParser::Status::kError) {
      Drop(c);
      return;
    }
    break;
  }
  c->input.erase(0, pos);
  commands_.fetch_add(served, std::memory_order_relaxed);
  uint64_t written = 0;
  switch (FlushOutput(c->fd, &c->output, &c->sent, &written)) {
    case FlushResult::kAllWritten:
      if (c->want_write) {
        c->want_write = false;
        (void)loop_->SetFdInterest(c->watch, FdInterest::kRead);
      }
      break;
    case FlushResult::kWouldBlock:
      if (!c->want_write) {
        c->want_write = true;
        (void)loop_->SetFdInterest(c->watch, FdInterest::kReadWrite);
      }
      break;
    case FlushResult::kFailed:
      Drop(c);
      break;
  }
}

void TrivialRespServer::Drop(Connection* c) {
  loop_->UnwatchFd(c->watch);
  close(c->fd);
  connections_->open.erase(c);
}

}  // namespace wallet::loadgen
