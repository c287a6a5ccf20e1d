#include "router/resp_server.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <utility>

#include "common/check.h"
#include "common/log.h"
#include "common/net.h"
#include "common/result_code.h"
#include "common/strings.h"

namespace wallet::router {

namespace {

constexpr size_t kReadChunkBytes = 64 * 1024;
constexpr size_t kMaxReadBytesPerTurn = 1024 * 1024;  // fairness between connections

// Appends a router or shard reply in RESP2.
void WriteReply(resp::ReplyWriter& writer, const shardlink::ShardReply& reply) {
  using Type = shardlink::ShardReply::Type;
  switch (reply.type) {
    case Type::kStatus:
      writer.SimpleString(reply.text);
      return;
    case Type::kError:
      writer.Error(reply.error_word(), reply.error_message());
      return;
    case Type::kInteger:
      writer.Integer(reply.integer);
      return;
    case Type::kBulk:
      writer.Bulk(reply.text);
      return;
    case Type::kNil:
      writer.Null();
      return;
    case Type::kArray:
      writer.ArrayHeader(reply.elements.size());
      for (const shardlink::ShardReply& element : reply.elements) WriteReply(writer, element);
      return;
  }
}

std::string ErrorBytes(ResultCode code, std::string_view message) {
  std::string bytes;
  resp::ReplyWriter(&bytes).Error(ResultCodeName(code), message);
  return bytes;
}

}  // namespace

// One client connection. `query` holds bytes read and not yet parsed; `slots` the
// replies owed, in command order (slots.front() has sequence front_sequence);
// `output` the bytes ready to write, from output_sent on.
struct RespServer::Connection {
  Connection(int socket_fd, uint64_t connection_id, const resp::Limits& limits)
      : fd(socket_fd), id(connection_id), parser(limits) {}

  int fd;
  uint64_t id;
  EventLoop::WatchId watch = 0;
  std::string peer;
  resp::RequestParser parser;
  std::string query;
  std::vector<std::string_view> args;
  std::deque<Slot> slots;
  uint64_t front_sequence = 0;
  uint64_t next_sequence = 0;
  size_t pending_calls = 0;   // slots not yet answered
  std::string output;
  size_t output_sent = 0;
  bool authenticated = false;
  bool closing = false;       // read nothing more; close once every reply is written
  bool closed = false;
  bool dirty = false;         // in dirty_
  bool parse_blocked = false; // complete commands may wait in `query` for the bounds
  FdInterest interest = FdInterest::kRead;

  size_t pending_output() const { return output.size() - output_sent; }
};

RespServer::RespServer(EventLoop& loop, Router& router, const RespServerOptions& options)
    : loop_(loop), router_(router), options_(options), read_buffer_(kReadChunkBytes) {}

RespServer::~RespServer() {
  *alive_ = false;
  loop_.CancelTimer(flush_timer_);
  for (auto& [id, connection] : connections_) {
    loop_.UnwatchFd(connection->watch);
    close(connection->fd);
  }
  connections_.clear();
  if (listen_fd_ >= 0) {
    loop_.UnwatchFd(listen_watch_);
    close(listen_fd_);
  }
}

absl::Status RespServer::Listen() {
  absl::StatusOr<ListeningSocket> listening = ListenTcp(options_.bind_address, options_.port);
  if (!listening.ok()) return listening.status();
  absl::StatusOr<EventLoop::WatchId> watch =
      loop_.WatchFd(listening->fd, FdInterest::kRead, [this](FdReadiness) { AcceptAll(); });
  if (!watch.ok()) {
    close(listening->fd);
    return watch.status();
  }
  listen_fd_ = listening->fd;
  listen_watch_ = *watch;
  port_ = listening->port;
  return absl::OkStatus();
}

void RespServer::BeginDrain() {
  draining_ = true;
  if (listen_fd_ >= 0) {
    loop_.UnwatchFd(listen_watch_);
    close(listen_fd_);
    listen_fd_ = -1;
  }
  std::vector<Connection*> connections;
  for (auto& [id, connection] : connections_) connections.push_back(connection.get());
  for (Connection* connection : connections) {
    if (connection->slots.empty() && connection->pending_output() == 0) {
      Close(connection);
    } else {
      UpdateInterest(connection);
    }
  }
}

bool RespServer::Drained() const {
  for (const auto& [id, connection] : connections_) {
    if (!connection->slots.empty() || connection->pending_output() > 0) return false;
  }
  return true;
}

// --- Connections ------------------------------------------------------------------

void RespServer::AcceptAll() {
  for (;;) {
    struct sockaddr_storage address;
    socklen_t length = sizeof(address);
    int fd = accept4(listen_fd_, reinterpret_cast<struct sockaddr*>(&address), &length, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) LogWarning("accept: %s", std::strerror(errno));
      return;
    }
    ++stats_.connections_received;
    if (connections_.size() >= options_.max_clients) {
      ++stats_.connections_rejected;
      static constexpr char kMessage[] = "-BUSY max number of clients reached\r\n";
      ssize_t ignored = send(fd, kMessage, sizeof(kMessage) - 1, MSG_NOSIGNAL);
      (void)ignored;
      close(fd);
      continue;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    const uint64_t id = next_connection_id_++;
    auto connection = std::make_unique<Connection>(fd, id, options_.limits);
    connection->authenticated = options_.password.empty();
    connection->peer = PeerAddressText(address);
    absl::StatusOr<EventLoop::WatchId> watch =
        loop_.WatchFd(fd, FdInterest::kRead, [this, id](FdReadiness readiness) { OnConnectionEvent(id, readiness); });
    if (!watch.ok()) {
      LogWarning("cannot watch client %s: %s", connection->peer.c_str(), std::string(watch.status().message()).c_str());
      close(fd);
      continue;
    }
    connection->watch = *watch;
    connections_.emplace(id, std::move(connection));
  }
}

void RespServer::OnConnectionEvent(uint64_t id, FdReadiness readiness) {
  auto it = connections_.find(id);
  if (it == connections_.end()) return;
  Connection* connection = it->second.get();
  if (readiness.writable) Write(connection);
  if (readiness.readable && !connection->closed) HandleReadable(connection);
}

void RespServer::HandleReadable(Connection* connection) {
  size_t read_this_turn = 0;
  while (CanRead(*connection) && read_this_turn < kMaxReadBytesPerTurn) {
    ssize_t n = read(connection->fd, read_buffer_.data(), read_buffer_.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (n <= 0) {  // the client closed or reset: nothing more to answer
      Close(connection);
      return;
    }
    const auto bytes = static_cast<size_t>(n);
    stats_.net_input_bytes += bytes;
    read_this_turn += bytes;
    connection->query.append(read_buffer_.data(), bytes);
    ProcessQuery(connection);
    if (bytes < read_buffer_.size()) break;  // drained for now
  }
  UpdateInterest(connection);
}

bool RespServer::CanRead(const Connection& connection) const {
  // A client that pipelines more than max_pending_per_client calls is not read
  // until some are answered (backpressure through TCP), rather than refused.
  return !connection.closing && !connection.closed && !draining_ &&
         connection.pending_calls < options_.max_pending_per_client &&
         connection.slots.size() < options_.max_queued_replies_per_client &&
         connection.pending_output() <= options_.max_output_bytes;
}

void RespServer::ProcessQuery(Connection* connection) {
  size_t consumed = 0;
  bool need_more = false;
  connection->parse_blocked = false;
  while (!connection->closing) {
    if (!CanRead(*connection)) {
      connection->parse_blocked = consumed < connection->query.size();
      break;
    }
    auto status = connection->parser.Next(connection->query, &consumed, &connection->args);
    if (status == resp::RequestParser::Status::kNeedMore) {
      need_more = true;
      break;
    }
    if (status == resp::RequestParser::Status::kError) {
      // The stream can no longer be trusted: answer after the earlier replies, close.
      ++stats_.protocol_errors;
      LogWarning("client %s: %s; closing", connection->peer.c_str(), connection->parser.error().c_str());
      AddReadySlot(connection, ErrorBytes(connection->parser.error_code(), connection->parser.error()));
      connection->closing = true;
      break;
    }
    HandleCommand(connection, connection->args);
  }
  connection->args.clear();  // they point into `query`
  connection->query.erase(0, consumed);
  if (connection->closing) {
    connection->query.clear();
  } else if (need_more && connection->query.size() > options_.max_query_bytes) {
    ++stats_.protocol_errors;
    AddReadySlot(connection, ErrorBytes(ResultCode::kLimitExceeded,
                                        StrCat("query buffer above ", options_.max_query_bytes, " bytes")));
    connection->closing = true;
    connection->query.clear();
  }
}

void RespServer::HandleCommand(Connection* connection, const std::vector<std::string_view>& args) {
  ++stats_.commands;
  const std::string_view name = args[0];
  if (EqualsIgnoreCase(name, "QUIT")) {
    AddReadySlot(connection, "+OK\r\n");
    connection->closing = true;
    return;
  }
  if (EqualsIgnoreCase(name, "AUTH")) {
    HandleAuth(connection, args);
    return;
  }
  if (!connection->authenticated) {
    AddReadySlot(connection, ErrorBytes(ResultCode::kNotAuthenticated, "authentication required"));
    return;
  }
  if (EqualsIgnoreCase(name, "ECHO")) {
    // ECHO is what `redis-cli --pipe` sends last to learn that every reply came.
    if (args.size() != 2) {
      AddReadySlot(connection, ErrorBytes(ResultCode::kWrongArity,
                                          "wrong number of arguments for 'ECHO'; usage: ECHO message"));
      return;
    }
    std::string bytes;
    resp::ReplyWriter(&bytes).Bulk(args[1]);
    AddReadySlot(connection, std::move(bytes));
    return;
  }
  if (EqualsIgnoreCase(name, "INFO")) {
    const std::string_view section = args.size() > 1 ? args[1] : std::string_view("default");
    std::string text;
    if (options_.info) options_.info(section, &text);
    AppendInfo(section, &text);
    std::string bytes;
    resp::ReplyWriter(&bytes).Bulk(text);
    AddReadySlot(connection, std::move(bytes));
    return;
  }
  if (connection->pending_calls >= options_.max_pending_per_client) {
    ++stats_.client_busy;
    AddReadySlot(connection, ErrorBytes(ResultCode::kBusy,
                                        StrCat("router overloaded: ", connection->pending_calls,
                                               " calls pending on this connection; nothing was done, retry later")));
    return;
  }
  const uint64_t sequence = connection->next_sequence++;
  connection->slots.emplace_back();
  ++connection->pending_calls;
  router_.Execute(
      std::vector<std::string>(args.begin(), args.end()),
      [this, alive = alive_, id = connection->id, sequence](shardlink::ShardReply reply) {
        if (*alive) OnReply(id, sequence, reply);
      },
      /*order_key=*/connection->id);
}

void RespServer::HandleAuth(Connection* connection, const std::vector<std::string_view>& args) {
  // AUTH password, or AUTH default password (the only user), as on the shard.
  if (args.size() < 2 || args.size() > 3) {
    AddReadySlot(connection, ErrorBytes(ResultCode::kWrongArity,
                                        "wrong number of arguments for 'AUTH'; usage: AUTH [username] password"));
    return;
  }
  if (args.size() == 3 && args[1] != "default") {
    AddReadySlot(connection, ErrorBytes(ResultCode::kAuthFailed, "invalid username-password pair"));
    return;
  }
  if (options_.password.empty()) {
    AddReadySlot(connection, ErrorBytes(ResultCode::kAuthFailed, "no password is configured on this router"));
    return;
  }
  if (!ConstantTimeEquals(options_.password, args.back())) {
    connection->authenticated = false;
    AddReadySlot(connection, ErrorBytes(ResultCode::kAuthFailed, "invalid password"));
    return;
  }
  connection->authenticated = true;
  AddReadySlot(connection, "+OK\r\n");
}

// --- Replies ------------------------------------------------------------------------

void RespServer::AddReadySlot(Connection* connection, std::string bytes) {
  connection->next_sequence++;
  connection->slots.push_back(Slot{true, std::move(bytes)});
  MoveReadySlots(connection);
}

void RespServer::OnReply(uint64_t connection_id, uint64_t sequence, const shardlink::ShardReply& reply) {
  auto it = connections_.find(connection_id);
  if (it == connections_.end() || it->second->closed) return;
  Connection* connection = it->second.get();
  WALLET_CHECK(sequence >= connection->front_sequence && sequence - connection->front_sequence < connection->slots.size(),
               "a reply for a slot the connection does not have");
  Slot& slot = connection->slots[sequence - connection->front_sequence];
  WALLET_CHECK(!slot.ready, "a reply slot answered twice");
  resp::ReplyWriter writer(&slot.bytes);
  WriteReply(writer, reply);
  slot.ready = true;
  const bool was_at_bound = connection->pending_calls == options_.max_pending_per_client;
  --connection->pending_calls;
  MoveReadySlots(connection);
  // A connection paused at the bound reads again (UpdateInterest, after the flush)
  // even when this reply is not the first one owed.
  if (was_at_bound) MarkDirty(connection);
}

void RespServer::MoveReadySlots(Connection* connection) {
  bool moved = false;
  while (!connection->slots.empty() && connection->slots.front().ready) {
    connection->output.append(connection->slots.front().bytes);
    connection->slots.pop_front();
    ++connection->front_sequence;
    moved = true;
  }
  if (moved || connection->closing) MarkDirty(connection);
}

void RespServer::MarkDirty(Connection* connection) {
  if (!connection->dirty) {
    connection->dirty = true;
    dirty_.push_back(connection->id);
  }
  if (flush_timer_ == 0) {
    // Due at once: runs after this turn's socket events, so that every reply that
    // arrived in the turn leaves in one write per connection.
    flush_timer_ = loop_.RunAfter(0, [this] {
      flush_timer_ = 0;
      FlushDirty();
    });
  }
}

void RespServer::FlushDirty() {
  std::vector<uint64_t> ids;
  ids.swap(dirty_);
  for (uint64_t id : ids) {
    auto it = connections_.find(id);
    if (it == connections_.end()) continue;
    Connection* connection = it->second.get();
    connection->dirty = false;
    if (!connection->closed) Write(connection);
  }
  closed_.clear();  // connections closed since the last flush; nothing refers to them now
}

void RespServer::Write(Connection* connection) {
  FlushResult result =
      FlushOutput(connection->fd, &connection->output, &connection->output_sent, &stats_.net_output_bytes);
  if (result == FlushResult::kFailed ||
      (result == FlushResult::kAllWritten && (connection->closing || draining_) && connection->slots.empty())) {
    Close(connection);
    return;
  }
  UpdateInterest(connection);
}

void RespServer::UpdateInterest(Connection* connection) {
  if (connection->closed) return;
  // Commands that waited in the buffer for the bounds go first (their replies may
  // fill the bounds again).
  if (connection->parse_blocked && CanRead(*connection)) {
    ProcessQuery(connection);
    if (connection->closed) return;
  }
  const bool read = CanRead(*connection) && !connection->parse_blocked;
  const bool write = connection->pending_output() > 0;
  const FdInterest interest = read && write ? FdInterest::kReadWrite
                              : read        ? FdInterest::kRead
                              : write       ? FdInterest::kWrite
                                            : FdInterest::kNone;
  if (interest == connection->interest) return;
  const bool was_reading = connection->interest == FdInterest::kRead || connection->interest == FdInterest::kReadWrite;
  if (was_reading && !read && !connection->closing && !draining_) ++stats_.read_pauses;
  (void)loop_.SetFdInterest(connection->watch, interest);
  connection->interest = interest;
}

void RespServer::Close(Connection* connection) {
  if (connection->closed) return;
  connection->closed = true;
  loop_.UnwatchFd(connection->watch);
  close(connection->fd);
  auto it = connections_.find(connection->id);
  WALLET_CHECK(it != connections_.end() && it->second.get() == connection, "closing an unregistered connection");
  // Kept alive until the next flush: callers up the stack may still hold the pointer.
  closed_.push_back(std::move(it->second));
  connections_.erase(it);
  if (flush_timer_ == 0) {
    flush_timer_ = loop_.RunAfter(0, [this] {
      flush_timer_ = 0;
      FlushDirty();
    });
  }
}

void RespServer::AppendInfo(std::string_view section, std::string* out) const {
  if (InfoSectionWanted(section, "server")) {
    StrAppend(out, "# Server\r\n", "tcp_port:", port_, "\r\n", "bind:", options_.bind_address, "\r\n",
              "process_id:", getpid(), "\r\n", "\r\n");
  }
  if (InfoSectionWanted(section, "clients")) {
    StrAppend(out, "# Clients\r\n", "connected_clients:", connections_.size(), "\r\n",
              "maxclients:", options_.max_clients, "\r\n",
              "max_pending_per_client:", options_.max_pending_per_client, "\r\n",
              "max_queued_replies_per_client:", options_.max_queued_replies_per_client, "\r\n",
              "total_connections_received:", stats_.connections_received, "\r\n",
              "rejected_connections:", stats_.connections_rejected, "\r\n",
              "total_commands_processed:", stats_.commands, "\r\n", "client_busy_replies:", stats_.client_busy,
              "\r\n", "protocol_errors:", stats_.protocol_errors, "\r\n", "read_pauses:", stats_.read_pauses,
              "\r\n", "total_net_input_bytes:", stats_.net_input_bytes, "\r\n",
              "total_net_output_bytes:", stats_.net_output_bytes, "\r\n", "\r\n");
  }
}

}  // namespace wallet::router
