#include "shard/server.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <utility>

#include "common/check.h"
#include "common/log.h"
#include "common/net.h"
#include "common/stop_signals.h"
#include "common/strings.h"
#include "shard/commands.h"
#include "shard/storage.h"

namespace wallet::shard {

namespace {

constexpr size_t kReadChunkBytes = 64 * 1024;
constexpr size_t kMaxReadBytesPerTurn = 1024 * 1024;  // fairness between connections
constexpr int kMaxEventsPerWait = 256;
constexpr int64_t kTimerIntervalMs = 10;

constexpr int64_t kCollectSliceUs = 1000;  // collection time per 10 ms tick, at most
constexpr int64_t kLogRetryIntervalMs = 100;  // retries of a failed event log

int64_t MonotonicMicros() {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<int64_t>(now.tv_sec) * 1'000'000 + now.tv_nsec / 1000;
}

int64_t WallClockMs() {
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  return static_cast<int64_t>(now.tv_sec) * 1000 + now.tv_nsec / 1'000'000;
}

std::string ErrnoText(std::string_view what) { return StrCat(what, ": ", std::strerror(errno)); }

// Resident set size of this process, from /proc/self/statm.
int64_t ResidentBytes() {
  FILE* file = std::fopen("/proc/self/statm", "r");
  if (file == nullptr) return 0;
  long pages_total = 0, pages_resident = 0;
  int read = std::fscanf(file, "%ld %ld", &pages_total, &pages_resident);
  std::fclose(file);
  if (read != 2) return 0;
  return static_cast<int64_t>(pages_resident) * sysconf(_SC_PAGESIZE);
}

int64_t PeakResidentBytes() {
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;
}

}  // namespace

// One client connection. `query` holds bytes read but not yet consumed (the start
// of an unfinished command); replies accumulate in `output` from `output_sent` on.
struct ShardServer::Connection {
  Connection(int socket_fd, uint64_t connection_id, const resp::Limits& limits)
      : fd(socket_fd), id(connection_id), parser(limits) {}

  int fd;
  uint64_t id;
  std::string peer;
  resp::RequestParser parser;
  std::string query;
  std::string output;
  size_t output_sent = 0;
  Session session;
  bool dirty = false;         // in dirty_: has replies to flush at the end of this turn
  bool closing = false;       // close once the output is written
  bool closed = false;        // in to_close_
  bool held = false;          // in held_: replies wait for the event log to recover
  bool appended = false;      // its commands appended events this turn (not yet committed)
  uint32_t interest = 0;      // current epoll events
  std::vector<std::string_view> args;

  size_t pending_output() const { return output.size() - output_sent; }
};

ShardServer::ShardServer(const ServerOptions& options, Engine* engine, ShardStorage* storage)
    : options_(options), engine_(engine), storage_(storage), read_buffer_(kReadChunkBytes) {
  post_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  WALLET_CHECK(post_fd_ >= 0, "eventfd for posted tasks");
}

void ShardServer::Post(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(post_mutex_);
    posted_.push_back(std::move(task));
  }
  uint64_t one = 1;
  ssize_t ignored = write(post_fd_, &one, sizeof(one));
  (void)ignored;
}

// Loop thread: runs the tasks posted so far, in order.
void ShardServer::RunPosted() {
  uint64_t count = 0;
  ssize_t ignored = read(post_fd_, &count, sizeof(count));
  (void)ignored;
  std::vector<std::function<void()>> tasks;
  {
    std::lock_guard<std::mutex> lock(post_mutex_);
    tasks.swap(posted_);
  }
  for (auto& task : tasks) task();
}

void ShardServer::SetPartitionOwnership(PartitionSet owned,
                                        std::shared_ptr<const std::vector<std::string>> owners) {
  engine_->set_owned_partitions(std::move(owned));
  partition_owners_ = std::move(owners);
}

std::string_view ShardServer::PartitionOwner(uint32_t partition) const {
  if (partition_owners_ == nullptr || partition >= partition_owners_->size()) return "unknown";
  return (*partition_owners_)[partition];
}

ShardServer::~ShardServer() {
  for (auto& [fd, connection] : connections_) close(fd);
  connections_.clear();
  for (int fd : {listen_fd_, epoll_fd_, wake_fd_, signal_fd_, post_fd_}) {
    if (fd >= 0) close(fd);
  }
}

absl::Status ShardServer::Listen() {
  absl::StatusOr<ListeningSocket> listening = ListenTcp(options_.bind_address, options_.port);
  if (!listening.ok()) return listening.status();
  listen_fd_ = listening->fd;
  bound_port_ = listening->port;
  return absl::OkStatus();
}

void ShardServer::RequestStop() {
  if (wake_fd_ >= 0) {
    uint64_t one = 1;
    ssize_t ignored = write(wake_fd_, &one, sizeof(one));
    (void)ignored;
  }
}

absl::Status ShardServer::HandleStopSignals() {
  if (absl::Status status = BlockStopSignals(); !status.ok()) return status;
  absl::StatusOr<int> fd = OpenStopSignalFd();
  if (!fd.ok()) return fd.status();
  signal_fd_ = *fd;
  return absl::OkStatus();
}

absl::Status ShardServer::Run() {
  if (listen_fd_ < 0) return absl::FailedPreconditionError("Listen() first");
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) return absl::InternalError(ErrnoText("epoll_create1"));
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) return absl::InternalError(ErrnoText("eventfd"));
  struct epoll_event event;
  std::memset(&event, 0, sizeof(event));
  event.events = EPOLLIN;
  event.data.fd = listen_fd_;
  epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, listen_fd_, &event);
  event.data.fd = wake_fd_;
  epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &event);
  event.data.fd = post_fd_;
  epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, post_fd_, &event);
  RunPosted();  // tasks posted before the loop started
  signal(SIGPIPE, SIG_IGN);
  if (signal_fd_ >= 0) {
    event.data.fd = signal_fd_;
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, signal_fd_, &event);
  }

  now_ms_ = WallClockMs();
  start_time_ms_ = now_ms_;
  stats_window_start_ms_ = now_ms_;
  next_collect_ms_ = now_ms_ + kTimerIntervalMs;
  struct epoll_event events[kMaxEventsPerWait];
  while (!stopping_) {
    int timeout_ms = static_cast<int>(std::max<int64_t>(0, next_collect_ms_ - WallClockMs()));
    int ready = epoll_wait(epoll_fd_, events, kMaxEventsPerWait, timeout_ms);
    if (ready < 0) {
      if (errno == EINTR) continue;
      return absl::InternalError(ErrnoText("epoll_wait"));
    }
    // One clock reading per turn: every command of the turn gets the same time.
    now_ms_ = WallClockMs();
    for (int i = 0; i < ready; ++i) {
      int fd = events[i].data.fd;
      if (fd == listen_fd_) {
        AcceptAll();
      } else if (fd == wake_fd_) {
        stopping_ = true;
      } else if (fd == post_fd_) {
        RunPosted();
      } else if (fd == signal_fd_) {
        if (int signal_number = ReadStopSignal(signal_fd_); signal_number != 0) {
          LogInfo("received %s, shutting down", strsignal(signal_number));
        }
        stopping_ = true;
      } else {
        auto it = connections_.find(fd);
        if (it == connections_.end() || it->second->closed) continue;
        Connection* connection = it->second.get();
        if (connection->held) {
          // Not read while its replies wait for the log; only a hang-up is handled.
          if (events[i].events & (EPOLLERR | EPOLLHUP | EPOLLRDHUP)) Close(connection);
          continue;
        }
        if (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) HandleReadable(connection);
        if (!connection->closed && (events[i].events & EPOLLOUT)) HandleWritable(connection);
      }
    }
    CommitTurn();
    FlushDirty();
    if (storage_ != nullptr && !storage_->log().failed()) storage_->StartRequestedSnapshot(now_ms_);
    if (now_ms_ >= next_collect_ms_) OnTimer(now_ms_);
  }
  // Best-effort flush of replies already produced, then close everything.
  FlushDirty();
  for (auto& [fd, connection] : connections_) close(fd);
  connections_.clear();
  LogInfo("stopped; %llu commands processed",
          static_cast<unsigned long long>(stats_.commands_processed));
  return absl::OkStatus();
}

void ShardServer::AcceptAll() {
  for (;;) {
    struct sockaddr_storage address;
    socklen_t length = sizeof(address);
    int fd = accept4(listen_fd_, reinterpret_cast<struct sockaddr*>(&address), &length,
                     SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) LogWarning("%s", ErrnoText("accept").c_str());
      return;
    }
    ++stats_.connections_received;
    if (connections_.size() >= options_.max_clients) {
      ++stats_.connections_rejected;
      static constexpr char kMessage[] = "-BUSY max number of clients reached\r\n";
      ssize_t ignored = write(fd, kMessage, sizeof(kMessage) - 1);
      (void)ignored;
      close(fd);
      continue;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    auto connection = std::make_unique<Connection>(fd, next_connection_id_++, options_.limits);
    connection->session.authenticated = options_.password.empty();
    connection->peer = PeerAddressText(address);
    struct epoll_event event;
    std::memset(&event, 0, sizeof(event));
    event.events = EPOLLIN;
    event.data.fd = fd;
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &event) != 0) {
      LogWarning("%s", ErrnoText("epoll_ctl add").c_str());
      close(fd);
      continue;
    }
    connection->interest = EPOLLIN;
    connections_.emplace(fd, std::move(connection));
  }
}

void ShardServer::HandleReadable(Connection* connection) {
  size_t read_this_turn = 0;
  while (!connection->closing && read_this_turn < kMaxReadBytesPerTurn) {
    ssize_t n = read(connection->fd, read_buffer_.data(), read_buffer_.size());
    if (n <= 0) {
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      if (n < 0 && errno == EINTR) continue;
      Close(connection);  // peer closed or reset: nothing more to answer
      return;
    }
    size_t bytes = static_cast<size_t>(n);
    stats_.net_input_bytes += bytes;
    read_this_turn += bytes;
    if (connection->query.empty()) {
      // Fast path: no partial command waiting, so parse straight from the read
      // buffer and keep only an unfinished tail.
      std::string_view data(read_buffer_.data(), bytes);
      size_t consumed = ProcessBuffer(connection, data);
      if (consumed < bytes && !connection->closing) connection->query.assign(data.substr(consumed));
    } else {
      connection->query.append(read_buffer_.data(), bytes);
      size_t consumed = ProcessBuffer(connection, connection->query);
      // The parser's place is relative to the unconsumed start, so dropping the
      // consumed prefix keeps it valid.
      connection->query.erase(0, consumed);
    }
    if (bytes < read_buffer_.size()) break;  // drained for now
    if (connection->pending_output() > options_.max_output_bytes) break;
  }
  if (connection->dirty || connection->closing) UpdateInterest(connection);
}

size_t ShardServer::ProcessBuffer(Connection* connection, std::string_view data) {
  resp::ReplyWriter writer(&connection->output);
  size_t before = connection->output.size();
  size_t consumed = 0;
  const uint64_t seq_before = storage_ != nullptr ? storage_->log().last_seq() : 0;
  while (!connection->closing) {
    auto status = connection->parser.Next(data, &consumed, &connection->args);
    if (status == resp::RequestParser::Status::kNeedMore) break;
    if (status == resp::RequestParser::Status::kError) {
      // The stream can no longer be trusted: answer, then close once written.
      ++stats_.protocol_errors;
      ResultCode code = connection->parser.error_code();
      RecordError(code);
      writer.Error(ResultCodeName(code), connection->parser.error());
      connection->closing = true;
      LogWarning("client %s: %s; closing", connection->peer.c_str(),
                 connection->parser.error().c_str());
      break;
    }
    ++stats_.commands_processed;
    CommandContext context{*this, *engine_, writer, connection->session, now_ms_};
    ExecuteCommand(context, connection->args);
    if (connection->session.close_after_reply) connection->closing = true;
  }
  if (storage_ != nullptr && storage_->log().last_seq() != seq_before) connection->appended = true;
  if (!connection->closing && data.size() - consumed > options_.max_query_bytes) {
    RecordError(ResultCode::kLimitExceeded);
    writer.Error(ResultCodeName(ResultCode::kLimitExceeded),
                 StrCat("query buffer above ", options_.max_query_bytes, " bytes"));
    connection->closing = true;
  }
  if (connection->output.size() != before || connection->closing) MarkDirty(connection);
  return consumed;
}

void ShardServer::MarkDirty(Connection* connection) {
  if (!connection->dirty) {
    connection->dirty = true;
    dirty_.push_back(connection);
  }
}

// Writes the turn's events to the log before any reply leaves. If that fails,
// every connection with replies this turn is held: its replies may report changes
// that are not durable, so they wait (and the connection is not read, keeping its
// replies in order) until the timer's Retry() succeeds.
void ShardServer::CommitTurn() {
  if (storage_ == nullptr || storage_->log().failed()) {
    for (Connection* connection : dirty_) connection->appended = false;
    return;
  }
  const bool committed = storage_->log().Commit(now_ms_).ok();
  if (!committed) next_log_retry_ms_ = now_ms_ + kLogRetryIntervalMs;
  // Only connections whose commands appended events wait; the others (reads,
  // errors) are answered as usual.
  size_t kept = 0;
  for (Connection* connection : dirty_) {
    const bool appended = connection->appended;
    connection->appended = false;
    if (committed || !appended || connection->closed) {
      dirty_[kept++] = connection;
      continue;
    }
    connection->dirty = false;
    connection->held = true;
    held_.push_back(connection);
    UpdateInterest(connection);
  }
  dirty_.resize(kept);
  if (committed) return;
  LogError("event log write failed; holding the replies of %zu connection(s) and refusing mutations "
           "until it can be written",
           held_.size());
}

// After the log recovered: sends the held replies and reads those connections again.
void ShardServer::ReleaseHeld() {
  std::vector<Connection*> held;
  held.swap(held_);
  for (Connection* connection : held) {
    connection->held = false;
    if (!connection->closed) MarkDirty(connection);
  }
  FlushDirty();
}

bool ShardServer::log_unavailable() const { return storage_ != nullptr && storage_->log().failed(); }

std::string ShardServer::log_failure_message() const {
  if (!log_unavailable()) return "";
  return StrCat("the event log cannot be written (", FromAbsl(storage_->log().failure().message()),
                "); mutations are refused until it can; retry later with the same txid");
}

void ShardServer::FlushDirty() {
  for (Connection* connection : dirty_) {
    connection->dirty = false;
    if (!connection->closed && !connection->held) HandleWritable(connection);
  }
  dirty_.clear();
  closed_.clear();  // destroys connections closed during this turn
}

void ShardServer::HandleWritable(Connection* connection) {
  FlushResult result =
      FlushOutput(connection->fd, &connection->output, &connection->output_sent, &stats_.net_output_bytes);
  if (result == FlushResult::kFailed || (result == FlushResult::kAllWritten && connection->closing)) {
    Close(connection);
    return;
  }
  UpdateInterest(connection);
}

void ShardServer::UpdateInterest(Connection* connection) {
  if (connection->closed) return;
  uint32_t wanted = 0;
  if (!connection->closing && !connection->held &&
      connection->pending_output() <= options_.max_output_bytes) {
    wanted |= EPOLLIN;
  }
  if (connection->pending_output() > 0 && !connection->held) wanted |= EPOLLOUT;
  if (connection->held) wanted = EPOLLRDHUP;  // only to notice the client hanging up
  if (wanted == connection->interest) return;
  struct epoll_event event;
  std::memset(&event, 0, sizeof(event));
  event.events = wanted;
  event.data.fd = connection->fd;
  epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, connection->fd, &event);
  connection->interest = wanted;
}

void ShardServer::Close(Connection* connection) {
  if (connection->closed) return;
  connection->closed = true;
  if (connection->held) {
    connection->held = false;
    held_.erase(std::find(held_.begin(), held_.end(), connection));
  }
  epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, connection->fd, nullptr);
  // Out of the map before the fd is closed: a client accepted later in this turn may
  // get the same fd number. The object itself lives on in closed_ until the end of
  // the turn, because this turn's event list and dirty_ may still point at it.
  auto it = connections_.find(connection->fd);
  WALLET_CHECK(it != connections_.end() && it->second.get() == connection,
               "closing a connection that is not registered");
  closed_.push_back(std::move(it->second));
  connections_.erase(it);
  close(connection->fd);
}

void ShardServer::OnTimer(int64_t now_ms) {
  next_collect_ms_ = now_ms + kTimerIntervalMs;
  if (storage_ != nullptr) {
    if (storage_->log().failed()) {
      if (now_ms < next_log_retry_ms_) return;
      next_log_retry_ms_ = now_ms + kLogRetryIntervalMs;
      if (!storage_->log().Retry().ok()) return;
      ReleaseHeld();
    }
    storage_->Poll(now_ms);
    if (storage_->log().failed()) return;  // no new events (collection) while failed
  }
  // Collection keeps pace with traffic: each tick may remove the fixed batch plus as
  // many records as were created since the last tick, so under any sustained rate the
  // table stays at about rate x window instead of growing until BUSY. The pause per
  // tick is proportional to the work the last 10 ms of traffic did.
  uint64_t created = engine_->stats().records_created;
  size_t budget = options_.collect_batch + static_cast<size_t>(created - records_created_at_last_tick_);
  records_created_at_last_tick_ = created;
  size_t removed = engine_->Collect(now_ms, budget);
  // A backlog (records of an earlier burst expiring now) drains in slices of at most
  // kCollectSliceUs per tick, batch by batch.
  int64_t slice_end_us = MonotonicMicros() + kCollectSliceUs;
  while (removed > 0 && MonotonicMicros() < slice_end_us) {
    removed = engine_->Collect(now_ms, options_.collect_batch);
  }
  if (now_ms - stats_window_start_ms_ >= 1000) {
    uint64_t commands = stats_.commands_processed - stats_window_commands_;
    stats_.ops_per_second =
        static_cast<double>(commands) * 1000.0 / static_cast<double>(now_ms - stats_window_start_ms_);
    stats_window_commands_ = stats_.commands_processed;
    stats_window_start_ms_ = now_ms;
  }
}

void ShardServer::RecordError(ResultCode code) {
  auto index = static_cast<size_t>(code);
  if (index < static_cast<size_t>(ResultCode::kCount_)) ++stats_.errors_by_code[index];
}

bool ShardServer::PasswordMatches(std::string_view candidate) const {
  return !options_.password.empty() && ConstantTimeEquals(options_.password, candidate);
}

void ShardServer::AppendInfo(std::string_view section, std::string* out) const {
  bool all = EqualsIgnoreCase(section, "all") || EqualsIgnoreCase(section, "everything") ||
             EqualsIgnoreCase(section, "default");
  auto wants = [&](std::string_view name) { return all || EqualsIgnoreCase(section, name); };
  const EngineStats engine_stats = engine_->stats();
  if (wants("server")) {
    StrAppend(out, "# Server\r\n", "wallet_version:", options_.version, "\r\n",
              "redis_version:7.0.0\r\n",  // protocol level tools may check; not a Redis
              "process_id:", getpid(), "\r\n", "tcp_port:", bound_port_, "\r\n",
              "bind:", options_.bind_address, "\r\n",
              "uptime_in_seconds:", (now_ms_ - start_time_ms_) / 1000, "\r\n",
              "partition_count:", engine_->options().partition_count, "\r\n",
              "partitions_owned:", engine_->owned_partitions().size(), "\r\n",
              "partitions:", engine_->owned_partitions().ToString(), "\r\n",
              "durability:none (event log arrives with the durability issue)\r\n", "\r\n");
  }
  if (wants("clients")) {
    StrAppend(out, "# Clients\r\n", "connected_clients:", connections_.size(), "\r\n",
              "maxclients:", options_.max_clients, "\r\n", "\r\n");
  }
  if (wants("stats")) {
    uint64_t errors = 0;
    for (uint64_t count : stats_.errors_by_code) errors += count;
    StrAppend(out, "# Stats\r\n", "total_connections_received:", stats_.connections_received,
              "\r\n", "rejected_connections:", stats_.connections_rejected, "\r\n",
              "total_commands_processed:", stats_.commands_processed, "\r\n",
              "instantaneous_ops_per_sec:", static_cast<uint64_t>(stats_.ops_per_second), "\r\n",
              "total_net_input_bytes:", stats_.net_input_bytes, "\r\n",
              "total_net_output_bytes:", stats_.net_output_bytes, "\r\n",
              "total_error_replies:", errors, "\r\n",
              "protocol_errors:", stats_.protocol_errors, "\r\n",
              "events_applied:", engine_stats.events_applied, "\r\n",
              "records_created:", engine_stats.records_created, "\r\n",
              "records_collected:", engine_stats.records_collected, "\r\n", "\r\n");
  }
  if (wants("errorstats")) {
    StrAppend(out, "# Errorstats\r\n");
    for (size_t i = 0; i < static_cast<size_t>(ResultCode::kCount_); ++i) {
      if (stats_.errors_by_code[i] == 0) continue;
      StrAppend(out, "errorstat_", ResultCodeName(static_cast<ResultCode>(i)),
                ":count=", stats_.errors_by_code[i], "\r\n");
    }
    StrAppend(out, "\r\n");
  }
  if (wants("memory")) {
    int64_t rss = ResidentBytes();
    StrAppend(out, "# Memory\r\n", "used_memory_rss:", rss, "\r\n",
              "used_memory_peak_rss:", PeakResidentBytes(), "\r\n",
              "rss_bytes_per_account:",
              engine_stats.accounts == 0 ? 0 : rss / static_cast<int64_t>(engine_stats.accounts),
              "\r\n", "\r\n");
  }
  if (wants("persistence")) {
    StrAppend(out, "# Persistence\r\n");
    if (storage_ == nullptr) {
      StrAppend(out, "durable:0\r\n\r\n");
    } else {
      const LogWriter& log = storage_->log();
      const LogWriterStats& log_stats = log.stats();
      const SnapshotStatus& snapshot = storage_->snapshot_status();
      const RecoveryReport& recovery = storage_->recovery();
      StrAppend(out, "durable:1\r\n", "data_dir:", storage_->options().data_dir, "\r\n",
                "fsync_policy:", FsyncPolicyName(log.policy()), "\r\n",
                "log_ok:", log.failed() ? 0 : 1, "\r\n",
                "log_error:", log.failed() ? FromAbsl(log.failure().message()) : "", "\r\n",
                "log_last_seq:", log.last_seq(), "\r\n", "log_durable_seq:", log.durable_seq(), "\r\n",
                "log_segment:", log.segment_path(), "\r\n", "log_records:", log_stats.records, "\r\n",
                "log_bytes_written:", log_stats.bytes_written, "\r\n", "log_commits:", log_stats.commits, "\r\n",
                "log_fsyncs:", log_stats.fsyncs, "\r\n", "log_failures:", log_stats.failures, "\r\n",
                "log_segments_created:", log_stats.segments_created, "\r\n",
                "log_segments_removed:", log_stats.segments_removed, "\r\n",
                "held_connections:", held_.size(), "\r\n",
                "snapshot_in_progress:", snapshot.in_progress ? 1 : 0, "\r\n",
                "snapshot_last_seq:", snapshot.last_seq, "\r\n",
                "snapshot_last_duration_ms:", snapshot.last_duration_ms, "\r\n",
                "snapshot_last_error:", snapshot.last_error, "\r\n", "snapshots_taken:", snapshot.taken, "\r\n",
                "snapshots_failed:", snapshot.failed, "\r\n",
                "recovery_snapshot_seq:", recovery.snapshot_seq, "\r\n",
                "recovery_snapshot_load_ms:", recovery.snapshot_load_ms, "\r\n",
                "recovery_events_replayed:", recovery.events_replayed, "\r\n",
                "recovery_replay_ms:", recovery.replay_ms, "\r\n",
                "recovery_torn_tail_bytes:", recovery.log.torn_tail ? recovery.log.tail_bytes : 0, "\r\n",
                "\r\n");
    }
  }
  if (wants("keyspace")) {
    StrAppend(out, "# Keyspace\r\n", "accounts:", engine_stats.accounts, "\r\n",
              "accounts_with_reserve:", engine_stats.accounts_with_reserve, "\r\n",
              "local_records:", engine_stats.local_records, "\r\n",
              "distributed_records:", engine_stats.distributed_records, "\r\n",
              "open_rows:", engine_stats.open_rows, "\r\n",
              "db0:keys=", engine_stats.accounts, ",expires=0,avg_ttl=0\r\n", "\r\n");
  }
}

}  // namespace wallet::shard
