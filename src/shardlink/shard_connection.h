// shard_connection.h — one pipelined hiredis connection from a router (or an
// executor) to one shard, on a wallet::EventLoop.
//
// Many commands are in flight at once; the shard answers them in order and hiredis
// matches each reply to its command. What it adds to a bare redisAsyncContext:
//   - AUTH first when a password is set; a refused AUTH is a clear error (the
//     commands waiting for the link fail with Unauthenticated and are never sent);
//   - a bound on commands in flight (max_in_flight): past it Send() refuses at once
//     with ResourceExhausted, nothing queues without limit;
//   - a connect timeout (TCP connect plus AUTH) and a command timeout: a command not
//     answered within command_timeout_ms resets the link, failing every command in
//     flight on it with Unavailable;
//   - reconnection with capped exponential backoff (with jitter) after any failure;
//   - a state for metrics: kConnecting, kConnected, kBackoff (and kClosed).
//
// Example (on the loop thread):
//   auto connection = ShardConnection::Create(*loop, "127.0.0.1:7001", options);
//   if (!connection.ok()) return connection.status();
//   (*connection)->Start();
//   absl::Status sent = (*connection)->Send({"BALANCE", "42"},
//       [](absl::StatusOr<ShardReply> reply) {
//         if (!reply.ok()) { ...Unavailable: outcome unknown, retry with the same txid... }
//         else if (reply->is_error()) { ...reply->error_code()... }
//         else { ...reply->elements[0].integer... }
//       });
//   if (!sent.ok()) { ...overloaded or link down: not sent, the callback is dropped... }
//
// Outcomes. Every Send() has exactly one:
//   - Send returns an error and the callback is destroyed uncalled; nothing was sent:
//       ResourceExhausted  max_in_flight commands are already in flight (overload);
//       Unavailable        the link is in backoff or closed (message: the last error);
//       Unauthenticated    the link is in backoff because the shard refused AUTH;
//       InvalidArgument    no arguments.
//   - Send returns OK and the callback runs exactly once, later, on the loop thread
//     (never inside Send), with:
//       a ShardReply       the shard's reply, including error replies (is_error());
//       Unavailable        the link was lost, reset by a command timeout or closed
//                          before the reply arrived. The command may or may not have
//                          run on the shard: the caller must treat the outcome as
//                          unknown (retry with the same transaction id, or ask TX);
//       Unauthenticated    it was waiting for the link and the shard refused AUTH: it
//                          was never sent.
// Commands sent while the link is still connecting wait (counted in in_flight(),
// within max_in_flight) and go out in order once it is ready.
//
// Threading: loop thread only, like the EventLoop's own calls; callbacks run on it.
// A callback may call Send() (on this or any connection) and Close(), but must not
// destroy the connection it was called from: Close() it and destroy it from a later
// loop task (ShardPool does this). Destroying a connection closes it.
//
// Ownership: the connection borrows the loop (which must outlive it) and owns its
// hiredis context. hiredis writes with write(2), so a dead peer raises SIGPIPE: the
// first connection created sets SIGPIPE to ignored when it has the default action
// (a handler the program installed is left alone).
//
// Host names are resolved by hiredis with a blocking getaddrinfo on the loop thread:
// give shards numeric addresses (the cluster layout stores them that way).
#pragma once

#include <hiredis/async.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <random>
#include <string>
#include <string_view>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/event_loop.h"
#include "common/result_code.h"
#include "shardlink/shard_reply.h"

namespace wallet::shardlink {

// Called exactly once for each Send() that returned OK; see the header comment.
using ReplyCallback = absl::AnyInvocable<void(absl::StatusOr<ShardReply>)>;

struct ShardConnectionOptions {
  std::string password;                // empty: the shard needs no AUTH
  size_t max_in_flight = 10'000;       // commands sent and not answered, plus waiting
  int64_t connect_timeout_ms = 2'000;  // TCP connect and AUTH reply
  int64_t command_timeout_ms = 5'000;  // oldest unanswered command; then the link resets
  int64_t backoff_initial_ms = 50;     // first wait before reconnecting
  int64_t backoff_max_ms = 2'000;      // the wait doubles after each failure up to this
};

enum class LinkState : uint8_t {
  kConnecting,  // TCP connect or AUTH under way; Sends wait for it
  kConnected,   // ready: Sends go out at once
  kBackoff,     // waiting before the next attempt; Sends are refused
  kClosed,      // Close() was called; Sends are refused
};
// "connecting", "connected", "backoff", "closed": for logs and metric labels.
std::string_view LinkStateName(LinkState state);

// Counters (monotonic) and gauges for metrics.
struct ShardLinkStats {
  uint64_t sent = 0;                    // Sends accepted (each gets a callback)
  uint64_t replied = 0;                 // replies received, error replies included
  uint64_t error_replies = 0;           // replies that were RESP errors
  // Error replies by first word: index = ResultCode; the last slot counts the
  // words that are not a ResultCode.
  uint64_t error_replies_by_code[static_cast<size_t>(ResultCode::kCount_) + 1] = {};
  uint64_t overloads = 0;               // Sends refused: max_in_flight reached
  uint64_t refused_unavailable = 0;     // Sends refused: backoff, closed or no link
  uint64_t failed_unavailable = 0;      // accepted commands failed by a lost/reset link
  uint64_t command_timeouts = 0;        // link resets because a reply was late
  uint64_t connect_attempts = 0;        // attempts started (the first and reconnects)
  uint64_t reconnects = 0;              // attempts started after a failure or a loss
  uint64_t connect_failures = 0;        // attempts that failed: refused, timeout, AUTH
  uint64_t auth_failures = 0;           // attempts the shard refused AUTH for
  uint64_t links_lost = 0;              // ready links that went down
  uint64_t in_flight = 0;               // gauge: commands awaiting a reply or the link
  uint64_t connected = 0;               // gauge: links in kConnected (0 or 1 here)

  // Adds every field of `other` (a pool's totals over its connections).
  void Add(const ShardLinkStats& other);
};

// A shard's address: "host:port" or "[ipv6]:port".
struct ShardAddress {
  std::string host;
  uint16_t port = 0;
};
// InvalidArgument for anything but a non-empty host and a port in 1..65535.
absl::StatusOr<ShardAddress> ParseShardAddress(std::string_view address);

class ShardConnection {
 public:
  // Checks the address and options; does not connect (see Start). InvalidArgument
  // for a bad address, max_in_flight == 0 or a timeout below 1 ms.
  static absl::StatusOr<std::unique_ptr<ShardConnection>> Create(EventLoop& loop, std::string_view address,
                                                                  const ShardConnectionOptions& options);
  // InvalidArgument for max_in_flight == 0, a timeout or backoff below 1 ms, or
  // backoff_max_ms below backoff_initial_ms. Create checks this; ShardPool::Create too.
  static absl::Status ValidateOptions(const ShardConnectionOptions& options);

  // Closes the link (Close()), failing what is in flight with Unavailable.
  ~ShardConnection();
  ShardConnection(const ShardConnection&) = delete;
  ShardConnection& operator=(const ShardConnection&) = delete;

  // Starts the first connection attempt and the command-timeout check. Called once,
  // by the owner (ShardPool) right after Create.
  void Start();

  // Sends one command (args[0] is its name) or holds it until the link is ready. See
  // the header comment for every outcome.
  absl::Status Send(absl::Span<const std::string_view> args, ReplyCallback callback);

  // Closes for good: fails every command in flight or waiting with Unavailable
  // (callbacks run inside this call), frees the hiredis context and stops all
  // timers. Idempotent. Called by ShardPool when a shard is removed or re-pointed,
  // and by the destructor.
  void Close();

  LinkState state() const { return state_; }
  const std::string& address() const { return address_; }
  // Commands sent and unanswered plus commands waiting for the link.
  size_t in_flight() const { return sent_.size() + waiting_.size(); }
  size_t max_in_flight() const { return options_.max_in_flight; }
  // Why the link last failed ("" when it never did), e.g. "connect: Connection refused".
  const std::string& last_error() const { return last_error_; }
  ShardLinkStats stats() const;

 private:
  // A command written to hiredis, waiting for its reply.
  struct Sent {
    ReplyCallback callback;
    int64_t sent_ms;
  };
  // A command waiting for the link to become ready (formatted RESP bytes).
  struct Waiting {
    std::string command;
    ReplyCallback callback;
  };
  // Who frees the hiredis context when the link is dropped.
  enum class ContextFree { kByUs, kByHiredis };
  // What a failure does to the commands that were waiting (never sent).
  enum class FailureKind { kConnectFailed, kAuthRefused, kLinkLost, kCommandTimeout, kClosed };

  ShardConnection(EventLoop& loop, std::string address, ShardAddress parsed, const ShardConnectionOptions& options);

  // Start() and the end of a backoff: one attempt (TCP connect, then AUTH).
  void Connect();
  // TCP up and AUTH (if any) accepted: sends what waited, resets the backoff.
  void BecomeReady();
  // Ends the current link (if any), fails what it carried and moves to kBackoff
  // (or stays kClosed), scheduling the next attempt.
  void Fail(FailureKind kind, std::string reason, ContextFree context_free);
  // Detaches and (kByUs) frees the hiredis context.
  void DropContext(ContextFree context_free);
  // Schedules the next Connect() after the current backoff (with jitter), doubled
  // for next time up to backoff_max_ms.
  void EnterBackoff();
  // Periodic: resets the link when the oldest command has waited command_timeout_ms.
  void CheckCommandTimeout();
  // Why Send refuses in kBackoff/kClosed or before Start.
  absl::Status RefusalStatus() const;

  // hiredis callbacks; the connection is context->data (null once detached).
  static void OnConnect(const redisAsyncContext* context, int status);
  static void OnDisconnect(const redisAsyncContext* context, int status);
  static void OnAuthReply(redisAsyncContext* context, void* reply, void* privdata);
  static void OnCommandReply(redisAsyncContext* context, void* reply, void* privdata);
  // hiredis is freeing the link after an error: fail what it carried and back off.
  void HandleLinkLost();
  // A reply to the oldest command: copy it out and run that command's callback.
  void HandleReply(const redisReply& reply);

  EventLoop& loop_;
  const std::string address_;
  const ShardAddress parsed_;
  const ShardConnectionOptions options_;

  LinkState state_ = LinkState::kBackoff;
  bool started_ = false;
  redisAsyncContext* context_ = nullptr;  // the current link, or null
  bool auth_pending_ = false;             // AUTH sent, its reply not yet in
  std::deque<Sent> sent_;                 // reply order
  std::deque<Waiting> waiting_;           // until the link is ready
  EventLoop::TimerId state_timer_ = 0;    // connect timeout or end of backoff
  EventLoop::TimerId timeout_check_timer_ = 0;
  int64_t backoff_ms_ = 0;                // the next backoff before jitter
  uint64_t failures_in_a_row_ = 0;        // for logs: only some failures are logged
  bool last_failure_was_auth_ = false;
  std::string last_error_;
  std::string formatted_;  // Send's scratch buffer: the command in RESP
  std::minstd_rand jitter_;
  ShardLinkStats stats_;
};

}  // namespace wallet::shardlink
