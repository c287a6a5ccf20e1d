#include "client/wallet_client.h"

#include <sys/random.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <future>
#include <map>
#include <mutex>
#include <thread>

#include "absl/container/inlined_vector.h"
#include "common/event_loop.h"
#include "common/result_code.h"
#include "common/strings.h"
#include "shardlink/shard_connection.h"
#include "shardlink/shard_reply.h"

namespace wallet::client {

namespace {

using shardlink::ShardReply;

// Transfers per TRANSFER.BATCH command: 5 arguments each must stay within the
// connection's argument bound (shardlink kMaxArgs, 8192); larger batches are split.
constexpr size_t kMaxBatch = 1'600;
constexpr int64_t kMaxBackoffMs = 1'000;

int64_t WallNowMs() {
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  return static_cast<int64_t>(now.tv_sec) * 1000 + now.tv_nsec / 1'000'000;
}

// Replies ------------------------------------------------------------------------

Reply::Kind KindOfWord(std::string_view word) {
  ResultCode code;
  if (!ParseResultCode(word, &code)) return Reply::Kind::kProtocol;
  switch (ResultCodeClass(code)) {
    case ResultClass::kOk:
      return Reply::Kind::kOk;
    case ResultClass::kRejected:
      return Reply::Kind::kRejected;
    case ResultClass::kRetry:
      return Reply::Kind::kRetry;
    case ResultClass::kProtocol:
      return Reply::Kind::kProtocol;
  }
  return Reply::Kind::kProtocol;
}

Reply FromShardReply(const ShardReply& reply) {
  Reply out;
  if (!reply.is_error()) return out;
  out.code = std::string(reply.error_word());
  out.message = std::string(reply.error_message());
  out.kind = KindOfWord(out.code);
  return out;
}

Reply RetryReply(std::string code, std::string message) {
  Reply reply;
  reply.kind = Reply::Kind::kRetry;
  reply.code = std::move(code);
  reply.message = std::move(message);
  return reply;
}

Reply ProtocolReply(std::string message) {
  Reply reply;
  reply.kind = Reply::Kind::kProtocol;
  reply.code = "MALFORMED";
  reply.message = std::move(message);
  return reply;
}

std::string_view ModeWord(TransferMode mode) {
  switch (mode) {
    case TransferMode::kTcc:
      return "tcc";
    case TransferMode::kSaga:
      return "saga";
    case TransferMode::kDefault:
      break;
  }
  return "";
}

// Crockford base32, as ULIDs use it.
constexpr char kBase32[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

}  // namespace

std::string Reply::ToString() const {
  if (ok()) return "OK";
  return message.empty() ? code : StrCat(code, ": ", message);
}

std::string NewTxid() {
  // 48 bits of Unix milliseconds, then 80 random bits: 128 bits in 26 characters.
  // Within one process the random part is a counter after a random start, so ids
  // made in the same millisecond still sort in the order they were made.
  static std::mutex mutex;
  static int64_t last_ms = -1;
  static unsigned __int128 last_random = 0;
  unsigned __int128 value;
  {
    std::lock_guard<std::mutex> lock(mutex);
    int64_t now = WallNowMs();
    const unsigned __int128 mask80 = (static_cast<unsigned __int128>(1) << 80) - 1;
    if (now <= last_ms && ((last_random + 1) & mask80) != 0) {
      now = last_ms;
      last_random = (last_random + 1) & mask80;
    } else {
      uint8_t bytes[10];
      size_t got = 0;
      while (got < sizeof(bytes)) {
        ssize_t n = getrandom(bytes + got, sizeof(bytes) - got, 0);
        if (n > 0) got += static_cast<size_t>(n);
      }
      last_random = 0;
      for (uint8_t byte : bytes) last_random = (last_random << 8) | byte;
      last_random >>= 1;  // leave room to count up within the millisecond
      last_ms = std::max(now, last_ms);
      now = last_ms;
    }
    value = (static_cast<unsigned __int128>(static_cast<uint64_t>(now) & ((uint64_t{1} << 48) - 1)) << 80) |
            last_random;
  }
  std::string id(26, '0');
  for (int i = 25; i >= 0; --i) {
    id[static_cast<size_t>(i)] = kBase32[static_cast<size_t>(value & 31)];
    value >>= 5;
  }
  return id;
}

// --------------------------------------------------------------------------------

class Client::Impl {
 public:
  explicit Impl(ClientOptions options) : options_(std::move(options)) {}

  absl::Status Start() {
    auto loop = EventLoop::Create();
    if (!loop.ok()) return loop.status();
    loop_ = *std::move(loop);
    shardlink::ShardConnectionOptions link;
    link.password = options_.password;
    link.max_in_flight = options_.max_in_flight;
    link.connect_timeout_ms = options_.connect_timeout_ms;
    link.command_timeout_ms = options_.call_timeout_ms;
    link.backoff_initial_ms = 50;
    link.backoff_max_ms = 1'000;
    if (absl::Status valid = shardlink::ShardConnection::ValidateOptions(link); !valid.ok()) return valid;
    for (const std::string& address : options_.endpoints) {
      Endpoint endpoint;
      endpoint.address = address;
      for (int i = 0; i < options_.connections_per_endpoint; ++i) {
        auto connection = shardlink::ShardConnection::Create(*loop_, address, link);
        if (!connection.ok()) return connection.status();
        endpoint.connections.push_back(*std::move(connection));
      }
      endpoints_.push_back(std::move(endpoint));
    }
    thread_ = std::thread([this] {
      loop_thread_id_ = std::this_thread::get_id();
      for (Endpoint& endpoint : endpoints_) {
        for (auto& connection : endpoint.connections) connection->Start();
      }
      started_.set_value();
      absl::Status status = loop_->Run();
      (void)status;
      // Closing: every call still waiting is answered.
      closing_ = true;
      for (Endpoint& endpoint : endpoints_) {
        for (auto& connection : endpoint.connections) connection->Close();
      }
      (void)loop_->RunUntil([] { return false; }, 0);
      // Calls waiting out a retry pause: their timers will never run.
      std::map<uint64_t, std::shared_ptr<Call>> waiting = std::move(waiting_);
      waiting_.clear();
      for (auto& [id, call] : waiting) {
        Reply closing = RetryReply("UNAVAILABLE", "client closing");
        closing.retries_exhausted = true;
        closing.attempts = call->attempts;
        closing.txid = call->txid;
        Deliver(*call, nullptr, std::move(closing));
      }
    });
    started_.get_future().wait();
    return absl::OkStatus();
  }

  ~Impl() {
    if (thread_.joinable()) {
      loop_->Stop();
      thread_.join();
    }
    // Connections before the loop they borrow.
    endpoints_.clear();
  }

  bool OnLoopThread() const { return std::this_thread::get_id() == loop_thread_id_; }

  // One call as sent (a command and what to do with its reply).
  struct Call {
    std::vector<std::string> args;
    std::function<void(const ShardReply*, Reply)> finish;  // reply (null on failure) and its Reply
    std::string txid;
    int attempts = 0;
    size_t endpoint = 0;
  };

  static std::shared_ptr<Call> MakeCall(std::vector<std::string> args, std::string txid,
                                        std::function<void(const ShardReply*, Reply)> finish) {
    auto call = std::make_shared<Call>();
    call->args = std::move(args);
    call->txid = std::move(txid);
    call->finish = std::move(finish);
    return call;
  }

  // Runs `task` on the loop thread (now, if already there). False when the hand-over
  // queue is full.
  bool OnLoop(EventLoop::Callback task) {
    if (OnLoopThread()) {
      task();
      return true;
    }
    return loop_->Post(std::move(task)).ok();
  }

  void Submit(std::shared_ptr<Call> call) {
    ++stats_calls_;
    if (in_flight_.fetch_add(1) >= options_.max_in_flight) {
      Reply busy = RetryReply("BUSY", StrCat("client overloaded: ", options_.max_in_flight, " calls in flight"));
      busy.txid = call->txid;
      busy.retries_exhausted = true;
      Deliver(*call, nullptr, std::move(busy));
      return;
    }
    std::shared_ptr<Call> keep = call;
    if (!OnLoop([this, call] {
          call->endpoint = next_endpoint_++ % endpoints_.size();
          Send(call);
        })) {
      Reply busy = RetryReply("BUSY", "client overloaded: its I/O queue is full");
      busy.txid = keep->txid;
      busy.retries_exhausted = true;
      Deliver(*keep, nullptr, std::move(busy));
    }
  }

  // Loop thread: one send of the call, to the first endpoint from call->endpoint on
  // whose connection takes it.
  void Send(const std::shared_ptr<Call>& call) {
    if (closing_) {
      Reply closing = RetryReply("UNAVAILABLE", "client closing");
      closing.retries_exhausted = true;
      Deliver(*call, nullptr, std::move(closing));
      return;
    }
    ++call->attempts;
    ++stats_sends_;
    if (call->attempts > 1) ++stats_retries_;
    const absl::InlinedVector<std::string_view, 16> views(call->args.begin(), call->args.end());
    std::string last_error;
    for (size_t tried = 0; tried < endpoints_.size(); ++tried) {
      const size_t index = (call->endpoint + tried) % endpoints_.size();
      Endpoint& endpoint = endpoints_[index];
      for (size_t c = 0; c < endpoint.connections.size(); ++c) {
        shardlink::ShardConnection& connection =
            *endpoint.connections[(endpoint.next + c) % endpoint.connections.size()];
        absl::Status sent = connection.Send(
            views, [this, call](absl::StatusOr<ShardReply> reply) { OnReply(call, std::move(reply)); });
        if (sent.ok()) {
          endpoint.next = (endpoint.next + c + 1) % endpoint.connections.size();
          if (index != call->endpoint) ++stats_failovers_;
          call->endpoint = index;
          return;
        }
        if (absl::IsInvalidArgument(sent)) {  // the command itself cannot be sent (too many arguments)
          Reply bad = ProtocolReply(std::string(FromAbsl(sent.message())));
          bad.txid = call->txid;
          bad.attempts = call->attempts;
          Deliver(*call, nullptr, std::move(bad));
          return;
        }
        last_error = StrCat(endpoint.address, ": ", FromAbsl(sent.message()));
      }
    }
    // No endpoint took it: nothing was sent; wait and try again.
    RetryOrGiveUp(call, RetryReply("UNAVAILABLE", StrCat("no router could take the call (", last_error, ")")));
  }

  void OnReply(const std::shared_ptr<Call>& call, absl::StatusOr<ShardReply> reply) {
    if (!reply.ok()) {
      RetryOrGiveUp(call, RetryReply("UNAVAILABLE", StrCat(options_.endpoints[call->endpoint], ": ",
                                                           FromAbsl(reply.status().message()),
                                                           " (outcome unknown; retried with the same txid)")));
      return;
    }
    Reply result = FromShardReply(*reply);
    if (result.kind == Reply::Kind::kRetry) {
      RetryOrGiveUp(call, std::move(result));
      return;
    }
    result.attempts = call->attempts;
    result.txid = call->txid;
    Deliver(*call, &*reply, std::move(result));
  }

  void RetryOrGiveUp(const std::shared_ptr<Call>& call, Reply reply) {
    if (call->attempts >= options_.max_attempts || closing_) {
      reply.retries_exhausted = true;
      reply.attempts = call->attempts;
      reply.txid = call->txid;
      Deliver(*call, nullptr, std::move(reply));
      return;
    }
    // The next send goes to the next endpoint (failover), after a growing pause.
    if (endpoints_.size() > 1) ++stats_failovers_;
    call->endpoint = (call->endpoint + 1) % endpoints_.size();
    const int shift = std::min(call->attempts - 1, 10);
    const int64_t delay = std::min(kMaxBackoffMs, options_.retry_backoff_ms << shift);
    const uint64_t id = next_wait_id_++;
    waiting_.emplace(id, call);
    loop_->RunAfter(delay, [this, id] {
      auto it = waiting_.find(id);
      if (it == waiting_.end()) return;
      std::shared_ptr<Call> waiting = std::move(it->second);
      waiting_.erase(it);
      Send(waiting);
    });
  }

  void Deliver(Call& call, const ShardReply* reply, Reply result) {
    in_flight_.fetch_sub(1);
    switch (result.kind) {
      case Reply::Kind::kOk:
        ++stats_ok_;
        break;
      case Reply::Kind::kRejected:
        ++stats_rejected_;
        break;
      case Reply::Kind::kRetry:
        ++stats_retry_;
        break;
      case Reply::Kind::kProtocol:
        ++stats_protocol_;
        break;
    }
    auto finish = std::move(call.finish);
    finish(reply, std::move(result));
  }

  // Sync wrapper: runs an async call and waits for it.
  template <typename Start>
  Reply Wait(Start start) {
    if (OnLoopThread()) return ProtocolReply("a synchronous call from the client's own I/O thread would deadlock");
    std::promise<Reply> promise;
    std::future<Reply> future = promise.get_future();
    start([&promise](const Reply& reply) { promise.set_value(reply); });
    return future.get();
  }

  Client::Stats stats() const {
    Client::Stats stats;
    stats.calls = stats_calls_;
    stats.sends = stats_sends_;
    stats.retries = stats_retries_;
    stats.failovers = stats_failovers_;
    stats.ok = stats_ok_;
    stats.rejected = stats_rejected_;
    stats.retry = stats_retry_;
    stats.protocol = stats_protocol_;
    stats.in_flight = in_flight_;
    return stats;
  }

  const ClientOptions& options() const { return options_; }

 private:
  struct Endpoint {
    std::string address;
    std::vector<std::unique_ptr<shardlink::ShardConnection>> connections;
    size_t next = 0;
  };

  const ClientOptions options_;
  std::unique_ptr<EventLoop> loop_;
  std::vector<Endpoint> endpoints_;
  std::thread thread_;
  std::thread::id loop_thread_id_;
  std::promise<void> started_;
  bool closing_ = false;  // loop thread
  // Calls waiting out a retry pause (loop thread), answered if the client closes first.
  std::map<uint64_t, std::shared_ptr<Call>> waiting_;
  uint64_t next_wait_id_ = 1;
  size_t next_endpoint_ = 0;  // loop thread
  std::atomic<size_t> in_flight_{0};
  std::atomic<uint64_t> stats_calls_{0}, stats_sends_{0}, stats_retries_{0}, stats_failovers_{0};
  std::atomic<uint64_t> stats_ok_{0}, stats_rejected_{0}, stats_retry_{0}, stats_protocol_{0};
};

// --------------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<Client>> Client::Create(ClientOptions options) {
  if (options.endpoints.empty()) return absl::InvalidArgumentError("at least one router endpoint is needed");
  if (options.connections_per_endpoint < 1 || options.connections_per_endpoint > 64) {
    return absl::InvalidArgumentError("connections_per_endpoint must be 1-64");
  }
  if (options.max_attempts < 1 || options.max_attempts > 100) {
    return absl::InvalidArgumentError("max_attempts must be 1-100");
  }
  if (options.call_timeout_ms < 1 || options.connect_timeout_ms < 1 || options.retry_backoff_ms < 0 ||
      options.max_in_flight < 1) {
    return absl::InvalidArgumentError(
        "call_timeout_ms and connect_timeout_ms must be >= 1, retry_backoff_ms >= 0, max_in_flight >= 1");
  }
  for (const std::string& endpoint : options.endpoints) {
    if (absl::StatusOr<shardlink::ShardAddress> parsed = shardlink::ParseShardAddress(endpoint); !parsed.ok()) {
      return absl::InvalidArgumentError(StrCat("bad endpoint '", endpoint, "': ", FromAbsl(parsed.status().message())));
    }
  }
  auto impl = std::make_unique<Impl>(std::move(options));
  if (absl::Status started = impl->Start(); !started.ok()) return started;
  return std::unique_ptr<Client>(new Client(std::move(impl)));
}

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::~Client() = default;

Client::Stats Client::stats() const { return impl_->stats(); }

// ---- Asynchronous ----------------------------------------------------------------

namespace {

// A call whose reply carries nothing but OK or an error.
std::function<void(const ShardReply*, Reply)> Plain(Client::Callback done) {
  return [done = std::move(done)](const ShardReply*, Reply reply) { done(reply); };
}

bool ValidTxid(const std::string& txid) {
  if (txid.empty() || txid.size() > 64) return false;
  for (char c : txid) {
    if (c < 0x21 || c > 0x7e) return false;
  }
  return true;
}

}  // namespace

void Client::OpenAsync(uint64_t account, std::string_view currency, Callback done) {
  impl_->Submit(Impl::MakeCall({"OPEN", std::to_string(account), std::string(currency)}, "", Plain(std::move(done))));
}

void Client::DepositAsync(uint64_t account, int64_t amount, std::string txid, Callback done) {
  if (txid.empty()) txid = NewTxid();
  impl_->Submit(Impl::MakeCall({"DEPOSIT", std::to_string(account), std::to_string(amount), txid}, txid,
                         Plain(std::move(done))));
}

void Client::WithdrawAsync(uint64_t account, int64_t amount, std::string txid, Callback done) {
  if (txid.empty()) txid = NewTxid();
  impl_->Submit(Impl::MakeCall({"WITHDRAW", std::to_string(account), std::to_string(amount), txid}, txid,
                         Plain(std::move(done))));
}

void Client::TransferAsync(TransferRequest request, Callback done) {
  if (request.txid.empty()) request.txid = NewTxid();
  std::vector<std::string> args = {"TRANSFER",         std::to_string(request.from), std::to_string(request.to),
                                   std::to_string(request.amount), request.currency, request.txid};
  if (request.mode != TransferMode::kDefault) {
    args.emplace_back("MODE");
    args.emplace_back(ModeWord(request.mode));
  }
  impl_->Submit(Impl::MakeCall(std::move(args), request.txid, Plain(std::move(done))));
}

void Client::GetBalanceAsync(uint64_t account, std::function<void(const Reply&, const Balance&)> done) {
  impl_->Submit(Impl::MakeCall({"BALANCE", std::to_string(account)}, "",
                         [done = std::move(done)](const ShardReply* reply, Reply result) {
                           Balance balance;
                           if (result.ok() && reply != nullptr) {
                             if (reply->type != ShardReply::Type::kArray || reply->elements.size() != 3) {
                               result = ProtocolReply(StrCat("unexpected BALANCE reply ", reply->ToString()));
                             } else {
                               balance.available = reply->elements[0].integer;
                               balance.held = reply->elements[1].integer;
                               balance.currency = reply->elements[2].text;
                             }
                           }
                           done(result, balance);
                         }));
}

void Client::TransferBatchAsync(std::vector<TransferRequest> requests, BatchCallback done) {
  // One TRANSFER.BATCH per mode and per kMaxBatch items; the replies are put back in
  // the requests' order. Items a router answers with a retryable error are sent again
  // (alone in a new batch, same txids) by the normal retry path of that sub-batch.
  struct Gather {
    std::vector<Reply> replies;
    size_t waiting = 0;
    BatchCallback done;
    std::mutex mutex;
  };
  auto gather = std::make_shared<Gather>();
  gather->replies.resize(requests.size());
  gather->done = std::move(done);
  if (requests.empty()) {
    gather->done({});
    return;
  }
  for (TransferRequest& request : requests) {
    if (request.txid.empty()) request.txid = NewTxid();
  }
  std::vector<std::vector<size_t>> groups;
  for (TransferMode mode : {TransferMode::kDefault, TransferMode::kTcc, TransferMode::kSaga}) {
    std::vector<size_t> group;
    for (size_t i = 0; i < requests.size(); ++i) {
      if (requests[i].mode != mode) continue;
      group.push_back(i);
      if (group.size() == kMaxBatch) groups.push_back(std::move(group)), group.clear();
    }
    if (!group.empty()) groups.push_back(std::move(group));
  }
  gather->waiting = groups.size();
  auto requests_shared = std::make_shared<std::vector<TransferRequest>>(std::move(requests));
  for (std::vector<size_t>& group : groups) {
    SendBatch(requests_shared, std::move(group), 0, [gather](std::vector<std::pair<size_t, Reply>> answers) {
      std::lock_guard<std::mutex> lock(gather->mutex);
      for (auto& [index, reply] : answers) gather->replies[index] = std::move(reply);
      if (--gather->waiting == 0) gather->done(std::move(gather->replies));
    });
  }
}

void Client::SendBatch(std::shared_ptr<std::vector<TransferRequest>> requests, std::vector<size_t> items,
                       int attempts_before, std::function<void(std::vector<std::pair<size_t, Reply>>)> done) {
  const std::vector<TransferRequest>& all = *requests;
  std::vector<std::string> args = {"TRANSFER.BATCH"};
  const TransferMode mode = all[items.front()].mode;
  if (mode != TransferMode::kDefault) {
    args.emplace_back("MODE");
    args.emplace_back(ModeWord(mode));
  }
  args.push_back(std::to_string(items.size()));
  args.reserve(args.size() + items.size() * 5);
  for (size_t index : items) {
    const TransferRequest& request = all[index];
    args.push_back(std::to_string(request.from));
    args.push_back(std::to_string(request.to));
    args.push_back(std::to_string(request.amount));
    args.push_back(request.currency);
    args.push_back(request.txid);
  }
  const int max_attempts = impl_->options().max_attempts;
  auto call = Impl::MakeCall(
      std::move(args), "",
      [this, requests, items, attempts_before, max_attempts, done](const ShardReply* reply, Reply whole) {
        std::vector<std::pair<size_t, Reply>> answers;
        const int attempts = std::max(attempts_before, whole.attempts);  // sends of these items so far
        if (reply == nullptr || !whole.ok()) {
          // The batch as a whole failed (retries already spent, or refused as a whole).
          for (size_t index : items) {
            Reply each = whole;
            each.txid = (*requests)[index].txid;
            answers.emplace_back(index, std::move(each));
          }
          done(std::move(answers));
          return;
        }
        if (reply->type != ShardReply::Type::kArray || reply->elements.size() != items.size()) {
          for (size_t index : items) {
            Reply bad = ProtocolReply(StrCat("unexpected TRANSFER.BATCH reply ", reply->ToString().substr(0, 200)));
            bad.txid = (*requests)[index].txid;
            answers.emplace_back(index, std::move(bad));
          }
          done(std::move(answers));
          return;
        }
        std::vector<size_t> again;
        for (size_t i = 0; i < items.size(); ++i) {
          Reply each = FromShardReply(reply->elements[i]);
          each.txid = (*requests)[items[i]].txid;
          each.attempts = attempts;
          if (each.kind == Reply::Kind::kRetry && attempts < max_attempts) {
            again.push_back(items[i]);
            continue;
          }
          if (each.kind == Reply::Kind::kRetry) each.retries_exhausted = true;
          answers.emplace_back(items[i], std::move(each));
        }
        if (again.empty()) {
          done(std::move(answers));
          return;
        }
        // The items still in doubt go again (same txids), the rest are answered after.
        auto partial = std::make_shared<std::vector<std::pair<size_t, Reply>>>(std::move(answers));
        SendBatch(requests, std::move(again), attempts,
                  [partial, done](std::vector<std::pair<size_t, Reply>> more) {
                    for (auto& answer : more) partial->push_back(std::move(answer));
                    done(std::move(*partial));
                  });
      });
  // Items sent again keep counting from their earlier sends: max_attempts bounds the
  // sends of each item, not of each sub-batch.
  call->attempts = attempts_before;
  impl_->Submit(std::move(call));
}

// ---- Synchronous -----------------------------------------------------------------

Reply Client::Open(uint64_t account, std::string_view currency) {
  return impl_->Wait([&](Callback done) { OpenAsync(account, currency, std::move(done)); });
}

Reply Client::Deposit(uint64_t account, int64_t amount, std::string txid) {
  if (!txid.empty() && !ValidTxid(txid)) return ProtocolReply("transaction id must be 1-64 visible ASCII characters");
  return impl_->Wait([&](Callback done) { DepositAsync(account, amount, std::move(txid), std::move(done)); });
}

Reply Client::Withdraw(uint64_t account, int64_t amount, std::string txid) {
  if (!txid.empty() && !ValidTxid(txid)) return ProtocolReply("transaction id must be 1-64 visible ASCII characters");
  return impl_->Wait([&](Callback done) { WithdrawAsync(account, amount, std::move(txid), std::move(done)); });
}

Reply Client::Transfer(TransferRequest request) {
  if (!request.txid.empty() && !ValidTxid(request.txid)) {
    return ProtocolReply("transaction id must be 1-64 visible ASCII characters");
  }
  return impl_->Wait([&](Callback done) { TransferAsync(std::move(request), std::move(done)); });
}

Reply Client::Ping() {
  return impl_->Wait([&](Callback done) { impl_->Submit(Impl::MakeCall({"PING"}, "", Plain(std::move(done)))); });
}

Reply Client::GetBalance(uint64_t account, Balance* out) {
  Balance balance;
  Reply reply = impl_->Wait([&](Callback done) {
    GetBalanceAsync(account, [&balance, done = std::move(done)](const Reply& result, const Balance& value) {
      balance = value;
      done(result);
    });
  });
  if (out != nullptr) *out = balance;
  return reply;
}

Reply Client::GetTx(std::string_view txid, TxFields* out) {
  TxFields fields;
  Reply reply = impl_->Wait([&](Callback done) {
    impl_->Submit(Impl::MakeCall({"TX", std::string(txid)}, std::string(txid),
                           [&fields, done = std::move(done)](const ShardReply* reply_in, Reply result) {
                             if (result.ok() && reply_in != nullptr && reply_in->type == ShardReply::Type::kArray) {
                               const auto& elements = reply_in->elements;
                               for (size_t i = 0; i + 1 < elements.size(); i += 2) {
                                 const ShardReply& value = elements[i + 1];
                                 fields.emplace_back(elements[i].text,
                                                     value.type == ShardReply::Type::kInteger
                                                         ? std::to_string(value.integer)
                                                         : value.text);
                               }
                             }
                             done(result);
                           }));
  });
  if (out != nullptr) *out = std::move(fields);
  return reply;
}

std::vector<Reply> Client::TransferBatch(std::vector<TransferRequest> requests) {
  if (impl_->OnLoopThread()) {
    std::vector<Reply> refused(requests.size(),
                               ProtocolReply("a synchronous call from the client's own I/O thread would deadlock"));
    return refused;
  }
  std::promise<std::vector<Reply>> promise;
  std::future<std::vector<Reply>> future = promise.get_future();
  TransferBatchAsync(std::move(requests), [&promise](std::vector<Reply> replies) { promise.set_value(std::move(replies)); });
  return future.get();
}

}  // namespace wallet::client
