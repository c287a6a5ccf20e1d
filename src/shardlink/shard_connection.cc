#include "shardlink/shard_connection.h"

#include <signal.h>

#include <algorithm>
#include <mutex>
#include <utility>

#include "absl/container/inlined_vector.h"
#include "absl/strings/numbers.h"
#include "common/check.h"
#include "common/log.h"
#include "common/resp.h"
#include "common/strings.h"
#include "shardlink/hiredis_adapter.h"

namespace wallet::shardlink {

namespace {

// Arguments in one command (resp::Limits::max_args' default; shards accept more by
// default). The router's largest command, a TRANSFER.BATCH chunk of at most 1638
// transfers (RouterCoreOptions::max_batch_items_per_shard_command), fits.
constexpr size_t kMaxArgs = 8192;
// The command-timeout check runs every command_timeout_ms / 4, within 1 to this.
constexpr int64_t kMaxTimeoutCheckPeriodMs = 250;

// hiredis writes with write(2): without this a shard that dies mid-write kills the
// process with SIGPIPE. A handler the program installed itself is kept.
void IgnoreSigpipeUnlessHandled() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction current = {};
    if (sigaction(SIGPIPE, nullptr, &current) != 0) return;
    if ((current.sa_flags & SA_SIGINFO) == 0 && current.sa_handler == SIG_DFL) signal(SIGPIPE, SIG_IGN);
  });
}

// A command's arguments as hiredis wants them: pointers and lengths.
struct Argv {
  absl::InlinedVector<const char*, 8> pointers;
  absl::InlinedVector<size_t, 8> lengths;

  explicit Argv(absl::Span<const std::string_view> args) {
    pointers.reserve(args.size());
    lengths.reserve(args.size());
    for (std::string_view arg : args) {
      pointers.push_back(arg.empty() ? "" : arg.data());  // never a null pointer
      lengths.push_back(arg.size());
    }
  }
  int count() const { return static_cast<int>(pointers.size()); }
};

}  // namespace

std::string_view LinkStateName(LinkState state) {
  constexpr std::string_view kNames[] = {"connecting", "connected", "backoff", "closed"};
  auto index = static_cast<size_t>(state);
  return index < std::size(kNames) ? kNames[index] : "unknown";
}

void ShardLinkStats::Add(const ShardLinkStats& other) {
  sent += other.sent;
  replied += other.replied;
  error_replies += other.error_replies;
  for (size_t i = 0; i < std::size(error_replies_by_code); ++i) {
    error_replies_by_code[i] += other.error_replies_by_code[i];
  }
  overloads += other.overloads;
  refused_unavailable += other.refused_unavailable;
  failed_unavailable += other.failed_unavailable;
  command_timeouts += other.command_timeouts;
  connect_attempts += other.connect_attempts;
  reconnects += other.reconnects;
  connect_failures += other.connect_failures;
  auth_failures += other.auth_failures;
  links_lost += other.links_lost;
  in_flight += other.in_flight;
  connected += other.connected;
}

absl::StatusOr<ShardAddress> ParseShardAddress(std::string_view address) {
  ShardAddress parsed;
  std::string_view port_text;
  if (!address.empty() && address.front() == '[') {
    size_t close = address.find(']');
    if (close == std::string_view::npos || close + 1 >= address.size() || address[close + 1] != ':') {
      return absl::InvalidArgumentError(StrCat("bad shard address '", address, "': want [ipv6]:port"));
    }
    parsed.host = std::string(address.substr(1, close - 1));
    port_text = address.substr(close + 2);
  } else {
    size_t colon = address.rfind(':');
    if (colon == std::string_view::npos || address.substr(0, colon).find(':') != std::string_view::npos) {
      return absl::InvalidArgumentError(StrCat("bad shard address '", address, "': want host:port"));
    }
    parsed.host = std::string(address.substr(0, colon));
    port_text = address.substr(colon + 1);
  }
  uint32_t port = 0;
  bool digits_only = !port_text.empty() && std::all_of(port_text.begin(), port_text.end(),
                                                       [](char c) { return c >= '0' && c <= '9'; });
  if (parsed.host.empty() || !digits_only || !absl::SimpleAtoi(ToAbsl(port_text), &port) || port == 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(StrCat("bad shard address '", address, "': want host:port, port 1-65535"));
  }
  parsed.port = static_cast<uint16_t>(port);
  return parsed;
}

// --- Life cycle ------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<ShardConnection>> ShardConnection::Create(EventLoop& loop, std::string_view address,
                                                                         const ShardConnectionOptions& options) {
  auto parsed = ParseShardAddress(address);
  if (!parsed.ok()) return parsed.status();
  absl::Status valid = ValidateOptions(options);
  if (!valid.ok()) return valid;
  return std::unique_ptr<ShardConnection>(
      new ShardConnection(loop, std::string(address), *std::move(parsed), options));
}

absl::Status ShardConnection::ValidateOptions(const ShardConnectionOptions& options) {
  if (options.max_in_flight == 0) return absl::InvalidArgumentError("max_in_flight must be at least 1");
  if (options.connect_timeout_ms < 1 || options.command_timeout_ms < 1 || options.backoff_initial_ms < 1 ||
      options.backoff_max_ms < options.backoff_initial_ms) {
    return absl::InvalidArgumentError(
        "timeouts and backoff must be at least 1 ms, and backoff_max_ms at least backoff_initial_ms");
  }
  return absl::OkStatus();
}

ShardConnection::ShardConnection(EventLoop& loop, std::string address, ShardAddress parsed,
                                 const ShardConnectionOptions& options)
    : loop_(loop),
      address_(std::move(address)),
      parsed_(std::move(parsed)),
      options_(options),
      backoff_ms_(options.backoff_initial_ms),
      jitter_(static_cast<uint32_t>(MonotonicNowMs()) ^ (static_cast<uint32_t>(parsed_.port) << 16)) {
  IgnoreSigpipeUnlessHandled();
}

ShardConnection::~ShardConnection() { Close(); }

void ShardConnection::Start() {
  WALLET_CHECK(!started_, "ShardConnection::Start called twice");
  started_ = true;
  int64_t period_ms = std::clamp<int64_t>(options_.command_timeout_ms / 4, 1, kMaxTimeoutCheckPeriodMs);
  timeout_check_timer_ = loop_.RunEvery(period_ms, [this] { CheckCommandTimeout(); });
  Connect();
}

void ShardConnection::Close() {
  if (state_ == LinkState::kClosed) return;
  loop_.CancelTimer(timeout_check_timer_);
  timeout_check_timer_ = 0;
  state_ = LinkState::kClosed;
  Fail(FailureKind::kClosed, "connection closed by its owner", ContextFree::kByUs);
}

// Starts one connection attempt: TCP connect, then AUTH when a password is set. The
// attempt ends in BecomeReady() or Fail(); the connect timeout bounds it.
void ShardConnection::Connect() {
  state_ = LinkState::kConnecting;
  ++stats_.connect_attempts;
  if (stats_.connect_attempts > 1) ++stats_.reconnects;
  redisAsyncContext* context = redisAsyncConnect(parsed_.host.c_str(), parsed_.port);
  if (context == nullptr) {
    Fail(FailureKind::kConnectFailed, "connect: out of memory", ContextFree::kByUs);
    return;
  }
  if (context->err != 0) {  // e.g. refused at once on loopback
    std::string reason = StrCat("connect: ", context->errstr);
    redisAsyncFree(context);
    Fail(FailureKind::kConnectFailed, reason, ContextFree::kByUs);
    return;
  }
  absl::Status attached = AttachToEventLoop(loop_, context);
  if (!attached.ok()) {
    redisAsyncFree(context);
    Fail(FailureKind::kConnectFailed, StrCat("connect: ", FromAbsl(attached.message())), ContextFree::kByUs);
    return;
  }
  context->data = this;
  context_ = context;
  redisAsyncSetConnectCallback(context, OnConnect);  // after attaching: it asks for writability
  redisAsyncSetDisconnectCallback(context, OnDisconnect);
  if (!options_.password.empty()) {
    std::string_view auth[] = {"AUTH", options_.password};
    Argv argv(auth);
    if (redisAsyncCommandArgv(context, OnAuthReply, nullptr, argv.count(), argv.pointers.data(),
                              argv.lengths.data()) != REDIS_OK) {
      Fail(FailureKind::kConnectFailed, "AUTH could not be queued", ContextFree::kByUs);
      return;
    }
    auth_pending_ = true;
  }
  state_timer_ = loop_.RunAfter(options_.connect_timeout_ms, [this] {
    state_timer_ = 0;
    Fail(FailureKind::kConnectFailed,
         StrCat("connect timeout: not ready within ", options_.connect_timeout_ms, " ms"), ContextFree::kByUs);
  });
}

// The link is usable: TCP is up and AUTH (if any) accepted. Sends the commands that
// waited for it, in order. Runs inside hiredis's connect callback or AUTH reply
// callback, so it must not free the context or run user callbacks.
void ShardConnection::BecomeReady() {
  loop_.CancelTimer(state_timer_);
  state_timer_ = 0;
  state_ = LinkState::kConnected;
  if (failures_in_a_row_ > 0) {
    LogInfo("shard link %s up again after %llu failures", address_.c_str(),
            static_cast<unsigned long long>(failures_in_a_row_));
  }
  failures_in_a_row_ = 0;
  backoff_ms_ = options_.backoff_initial_ms;
  last_failure_was_auth_ = false;
  int64_t now_ms = loop_.now_ms();
  while (!waiting_.empty()) {
    Waiting waiting = std::move(waiting_.front());
    waiting_.pop_front();
    int queued = redisAsyncFormattedCommand(context_, OnCommandReply, nullptr, waiting.command.data(),
                                            waiting.command.size());
    // Fails only on a context that is being freed or out of memory; neither can be
    // the case for a context that has just connected.
    WALLET_CHECK(queued == REDIS_OK, "hiredis refused a command on a fresh link");
    sent_.push_back(Sent{std::move(waiting.callback), now_ms});
  }
}

void ShardConnection::DropContext(ContextFree context_free) {
  redisAsyncContext* context = context_;
  context_ = nullptr;
  auth_pending_ = false;
  if (context == nullptr) return;
  context->data = nullptr;  // hiredis's callbacks for it are ignored from now on
  // Inside one of hiredis's reply callbacks the free is deferred by hiredis until the
  // callback returns; its pending callbacks then get NULL replies, ignored above.
  if (context_free == ContextFree::kByUs) redisAsyncFree(context);
}

// Ends the current link or attempt. Everything it carried fails: commands already
// written with Unavailable (outcome unknown), commands that waited for the link with
// Unavailable or, after a refused AUTH, Unauthenticated (never sent). Then backs off
// before the next attempt, unless closed. State is settled before any callback runs,
// so callbacks may Send (refused while in backoff) or Close.
void ShardConnection::Fail(FailureKind kind, std::string reason, ContextFree context_free) {
  DropContext(context_free);
  loop_.CancelTimer(state_timer_);
  state_timer_ = 0;
  bool was_connected = state_ == LinkState::kConnected;
  std::deque<Sent> sent = std::move(sent_);
  sent_.clear();
  std::deque<Waiting> waiting = std::move(waiting_);
  waiting_.clear();
  stats_.failed_unavailable += sent.size() + waiting.size();
  if (kind != FailureKind::kClosed) {
    last_error_ = reason;
    last_failure_was_auth_ = kind == FailureKind::kAuthRefused;
    ++failures_in_a_row_;
    if (kind == FailureKind::kConnectFailed || kind == FailureKind::kAuthRefused) ++stats_.connect_failures;
    if (kind == FailureKind::kAuthRefused) ++stats_.auth_failures;
    if (kind == FailureKind::kCommandTimeout) ++stats_.command_timeouts;
    if (was_connected) ++stats_.links_lost;
    // Every lost link is logged; of failed attempts in a row, the 1st, 2nd, 4th, 8th...
    bool log = was_connected || (failures_in_a_row_ & (failures_in_a_row_ - 1)) == 0;
    if (log) {
      LogWarning("shard link %s %s: %s (%zu commands failed); reconnecting with backoff", address_.c_str(),
                 was_connected ? "lost" : "attempt failed", reason.c_str(), sent.size() + waiting.size());
    }
    EnterBackoff();
  }
  if (sent.empty() && waiting.empty()) return;
  absl::Status sent_status = absl::UnavailableError(
      StrCat("shard ", address_, ": ", reason, "; the command's outcome is unknown"));
  absl::Status waiting_status =
      kind == FailureKind::kAuthRefused
          ? absl::UnauthenticatedError(StrCat("shard ", address_, ": ", reason, "; the command was not sent"))
          : absl::UnavailableError(StrCat("shard ", address_, ": ", reason, "; the command was not sent"));
  for (Sent& entry : sent) entry.callback(sent_status);
  for (Waiting& entry : waiting) entry.callback(waiting_status);
}

void ShardConnection::EnterBackoff() {
  state_ = LinkState::kBackoff;
  // Half the nominal wait plus a random part of the other half, so that routers that
  // lost a shard together do not come back together.
  int64_t half_ms = backoff_ms_ / 2;
  int64_t delay_ms = half_ms + static_cast<int64_t>(jitter_() % static_cast<uint64_t>(backoff_ms_ - half_ms + 1));
  backoff_ms_ = std::min(backoff_ms_ * 2, options_.backoff_max_ms);
  state_timer_ = loop_.RunAfter(delay_ms, [this] {
    state_timer_ = 0;
    Connect();
  });
}

// Periodic (timeout_check_timer_): replies come in order, so only the oldest command
// can be the first to be late. A late reply resets the link.
void ShardConnection::CheckCommandTimeout() {
  if (state_ != LinkState::kConnected || sent_.empty()) return;
  int64_t age_ms = loop_.now_ms() - sent_.front().sent_ms;
  if (age_ms < options_.command_timeout_ms) return;
  Fail(FailureKind::kCommandTimeout,
       StrCat("command timeout: no reply within ", options_.command_timeout_ms, " ms, link reset"),
       ContextFree::kByUs);
}

// --- Sending ------------------------------------------------------------------------

absl::Status ShardConnection::RefusalStatus() const {
  if (state_ == LinkState::kClosed) {
    return absl::UnavailableError(StrCat("shard ", address_, ": connection closed; the command was not sent"));
  }
  if (!started_) {
    return absl::UnavailableError(StrCat("shard ", address_, ": not started; the command was not sent"));
  }
  std::string message = StrCat("shard ", address_, " is in backoff after: ", last_error_,
                               "; the command was not sent");
  return last_failure_was_auth_ ? absl::UnauthenticatedError(message) : absl::UnavailableError(message);
}

absl::Status ShardConnection::Send(absl::Span<const std::string_view> args, ReplyCallback callback) {
  if (args.empty() || args.size() > kMaxArgs) {
    return absl::InvalidArgumentError(StrCat("a shard command takes 1 to ", kMaxArgs, " arguments"));
  }
  if (!started_ || state_ == LinkState::kBackoff || state_ == LinkState::kClosed) {
    ++stats_.refused_unavailable;
    return RefusalStatus();
  }
  if (in_flight() >= options_.max_in_flight) {
    ++stats_.overloads;
    return absl::ResourceExhaustedError(
        StrCat("shard ", address_, " overloaded: ", options_.max_in_flight, " commands in flight"));
  }
  // The command in RESP, as redisFormatCommandArgv would write it, into a reused
  // buffer: hiredis's formatter (sdscatfmt per argument, a new sds each time) was a
  // fifth of the router's CPU time (benchmarks/README.md, "Router against direct").
  formatted_.clear();
  resp::ReplyWriter writer(&formatted_);
  writer.ArrayHeader(args.size());
  for (std::string_view arg : args) writer.Bulk(arg);
  if (state_ == LinkState::kConnecting) {
    waiting_.push_back(Waiting{formatted_, std::move(callback)});
  } else {
    if (redisAsyncFormattedCommand(context_, OnCommandReply, nullptr, formatted_.data(), formatted_.size()) !=
        REDIS_OK) {
      ++stats_.refused_unavailable;
      return absl::UnavailableError(StrCat("shard ", address_, ": hiredis refused the command (out of memory)"));
    }
    sent_.push_back(Sent{std::move(callback), loop_.now_ms()});
  }
  ++stats_.sent;
  return absl::OkStatus();
}

ShardLinkStats ShardConnection::stats() const {
  ShardLinkStats stats = stats_;
  stats.in_flight = in_flight();
  stats.connected = state_ == LinkState::kConnected ? 1 : 0;
  return stats;
}

// --- hiredis callbacks ----------------------------------------------------------------

// TCP connect finished (hiredis 0.14: on the first readiness of the socket). Not run
// under hiredis's in-callback flag, so nothing here may free the context; on failure
// hiredis frees it itself right after this returns.
void ShardConnection::OnConnect(const redisAsyncContext* context, int status) {
  auto* self = static_cast<ShardConnection*>(context->data);
  if (self == nullptr) return;
  if (status != REDIS_OK) {
    self->Fail(FailureKind::kConnectFailed, StrCat("connect: ", context->errstr), ContextFree::kByHiredis);
    return;
  }
  if (!self->auth_pending_) self->BecomeReady();
}

// hiredis is freeing a connected context because of an error (EOF, I/O error,
// protocol error), after running the pending callbacks with NULL replies.
void ShardConnection::OnDisconnect(const redisAsyncContext* context, int /*status*/) {
  auto* self = static_cast<ShardConnection*>(context->data);
  if (self != nullptr) self->HandleLinkLost();
}

void ShardConnection::HandleLinkLost() {
  WALLET_CHECK(context_ != nullptr, "a hiredis disconnect for a link that was already dropped");
  std::string reason = context_->c.err != 0 ? StrCat("link lost: ", context_->c.errstr) : "link lost";
  Fail(state_ == LinkState::kConnected ? FailureKind::kLinkLost : FailureKind::kConnectFailed, reason,
       ContextFree::kByHiredis);
}

void ShardConnection::OnAuthReply(redisAsyncContext* context, void* reply, void* /*privdata*/) {
  auto* self = static_cast<ShardConnection*>(context->data);
  if (self == nullptr) return;
  if (reply == nullptr) {  // hiredis is freeing the context after an error
    self->HandleLinkLost();
    return;
  }
  self->auth_pending_ = false;
  ShardReply value = ShardReply::FromHiredis(*static_cast<redisReply*>(reply));
  if (value.is_ok()) {
    self->BecomeReady();
    return;
  }
  // Inside a reply callback: hiredis defers the free until this returns.
  self->Fail(FailureKind::kAuthRefused, StrCat("AUTH refused: ", value.ToString()), ContextFree::kByUs);
}

void ShardConnection::OnCommandReply(redisAsyncContext* context, void* reply, void* /*privdata*/) {
  auto* self = static_cast<ShardConnection*>(context->data);
  if (self == nullptr) return;
  if (reply == nullptr) {
    self->HandleLinkLost();
    return;
  }
  self->HandleReply(*static_cast<redisReply*>(reply));
}

void ShardConnection::HandleReply(const redisReply& reply) {
  WALLET_CHECK(!sent_.empty(), "a shard reply arrived with no command in flight");
  Sent entry = std::move(sent_.front());
  sent_.pop_front();
  ShardReply value = ShardReply::FromHiredis(reply);
  ++stats_.replied;
  if (value.is_error()) {
    ++stats_.error_replies;
    std::optional<ResultCode> code = value.error_code();
    ++stats_.error_replies_by_code[code.has_value() ? static_cast<size_t>(*code)
                                                    : static_cast<size_t>(ResultCode::kCount_)];
  }
  // Last: the callback may Close() this connection.
  entry.callback(std::move(value));
}

}  // namespace wallet::shardlink
