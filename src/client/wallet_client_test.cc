// wallet_client_test.cc — the client library without a cluster: NewTxid (format,
// time prefix, order and uniqueness), Client::Create's option checks, and what a
// client does when no router answers (a closed port, a listener that never replies):
// retries up to max_attempts with kRetry at the end, the overload bound, the
// deadlock guard, and calls in flight answered when the client is destroyed.
// tests/client_integration_test.cc runs the library against a real cluster.
#include "client/wallet_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <ctime>
#include <functional>
#include <future>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "gtest/gtest.h"

namespace wallet::client {
namespace {

using namespace std::chrono_literals;

constexpr std::string_view kAlphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

int64_t NowMs() {
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  return static_cast<int64_t>(now.tv_sec) * 1000 + now.tv_nsec / 1'000'000;
}

// The milliseconds in a txid's first 10 characters (48 bits, after 2 zero bits).
int64_t TxidMs(const std::string& txid) {
  int64_t value = 0;
  for (size_t i = 0; i < 10; ++i) value = value * 32 + static_cast<int64_t>(kAlphabet.find(txid[i]));
  return value;
}

// A loopback socket bound to a free port: listening (connections complete in the
// kernel but nothing is ever read or answered) or not (connects are refused).
class Socket {
 public:
  explicit Socket(bool listen_on_it) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
    socklen_t length = sizeof(address);
    EXPECT_EQ(getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &length), 0);
    port_ = ntohs(address.sin_port);
    if (listen_on_it) {
      EXPECT_EQ(listen(fd_, 128), 0);
    }
  }
  ~Socket() { close(fd_); }
  std::string endpoint() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
};

// Options for one endpoint; the tests change the fields they need.
ClientOptions Options(const std::string& endpoint) {
  ClientOptions options;
  options.endpoints = {endpoint};
  return options;
}

TransferRequest Request(uint64_t from, uint64_t to, int64_t amount, std::string txid = "") {
  TransferRequest request;
  request.from = from;
  request.to = to;
  request.amount = amount;
  request.currency = "USD";
  request.txid = std::move(txid);
  return request;
}

std::unique_ptr<Client> NewClient(ClientOptions options) {
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(std::move(options));
  EXPECT_TRUE(client.ok()) << client.status();
  return client.ok() ? std::move(*client) : nullptr;
}

// ---- NewTxid --------------------------------------------------------------------

TEST(ClientTxid, Has26CrockfordCharactersAndTheCurrentMillisecond) {
  const int64_t before = NowMs();
  const std::string txid = NewTxid();
  const int64_t after = NowMs();
  ASSERT_EQ(txid.size(), 26u) << txid;
  for (char c : txid) EXPECT_NE(kAlphabet.find(c), std::string_view::npos) << txid;
  EXPECT_LE(txid[0], '7') << "128 bits in 130: the first character carries 3 bits";
  EXPECT_GE(TxidMs(txid), before) << txid;
  EXPECT_LE(TxidMs(txid), after) << txid;
}

TEST(ClientTxid, StrictlyIncreasingWithinAProcessAndUniqueOver100k) {
  constexpr size_t kCount = 100'000;
  std::vector<std::string> ids;
  ids.reserve(kCount);
  for (size_t i = 0; i < kCount; ++i) ids.push_back(NewTxid());
  for (size_t i = 1; i < kCount; ++i) {
    ASSERT_LT(ids[i - 1], ids[i]) << "txid " << i << " is not after txid " << i - 1;
  }
  const std::unordered_set<std::string> unique(ids.begin(), ids.end());
  EXPECT_EQ(unique.size(), kCount);
  // Made within the same milliseconds, yet ordered: many share their time prefix.
  EXPECT_LT(TxidMs(ids.back()) - TxidMs(ids.front()), 60'000);
}

TEST(ClientTxid, UniqueAndOrderedPerThreadAcrossThreads) {
  constexpr int kThreads = 4;
  constexpr size_t kEach = 25'000;
  std::vector<std::vector<std::string>> made(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&made, t] {
      for (size_t i = 0; i < kEach; ++i) made[t].push_back(NewTxid());
    });
  }
  for (std::thread& thread : threads) thread.join();
  std::unordered_set<std::string> unique;
  for (const auto& ids : made) {
    EXPECT_TRUE(std::is_sorted(ids.begin(), ids.end()));
    unique.insert(ids.begin(), ids.end());
  }
  EXPECT_EQ(unique.size(), kThreads * kEach);
}

// ---- Create ---------------------------------------------------------------------

TEST(ClientOptions, CreateRefusesBadOptions) {
  // `change` spoils one field of otherwise valid options.
  auto refused = [](const std::function<void(ClientOptions&)>& change) {
    ClientOptions options = Options("127.0.0.1:1");
    change(options);
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(std::move(options));
    return !client.ok() && client.status().code() == absl::StatusCode::kInvalidArgument;
  };
  EXPECT_TRUE(refused([](ClientOptions& o) { o.endpoints.clear(); }));
  EXPECT_TRUE(refused([](ClientOptions& o) { o.endpoints = {"no-port"}; }));
  EXPECT_TRUE(refused([](ClientOptions& o) { o.endpoints = {"127.0.0.1:0"}; }));
  EXPECT_TRUE(refused([](ClientOptions& o) { o.endpoints = {"127.0.0.1:70000"}; }));
  EXPECT_TRUE(refused([](ClientOptions& o) { o.connections_per_endpoint = 0; }));
  EXPECT_TRUE(refused([](ClientOptions& o) { o.connections_per_endpoint = 65; }));
  EXPECT_TRUE(refused([](ClientOptions& o) { o.call_timeout_ms = 0; }));
  EXPECT_TRUE(refused([](ClientOptions& o) { o.connect_timeout_ms = 0; }));
  EXPECT_TRUE(refused([](ClientOptions& o) { o.max_attempts = 0; }));
  EXPECT_TRUE(refused([](ClientOptions& o) { o.max_attempts = 101; }));
  EXPECT_TRUE(refused([](ClientOptions& o) { o.retry_backoff_ms = -1; }));
  EXPECT_TRUE(refused([](ClientOptions& o) { o.max_in_flight = 0; }));
  // Valid options start a client even when nothing listens there.
  EXPECT_FALSE(refused([](ClientOptions&) {}));
}

// ---- No router answers ------------------------------------------------------------

TEST(ClientNoRouter, RefusedConnectionsAreRetriedMaxAttemptsTimesThenKRetry) {
  Socket closed(/*listen_on_it=*/false);
  ClientOptions options = Options(closed.endpoint());
  options.max_attempts = 3;
  options.retry_backoff_ms = 1;
  auto client = NewClient(options);
  ASSERT_NE(client, nullptr);
  Reply reply = client->Deposit(7, 100, "dep-1");
  EXPECT_EQ(reply.kind, Reply::Kind::kRetry) << reply.ToString();
  EXPECT_TRUE(reply.retryable());
  EXPECT_TRUE(reply.retries_exhausted);
  EXPECT_EQ(reply.code, "UNAVAILABLE");
  EXPECT_EQ(reply.attempts, 3);
  EXPECT_EQ(reply.txid, "dep-1");
  const Client::Stats stats = client->stats();
  EXPECT_EQ(stats.calls, 1u);
  EXPECT_EQ(stats.sends, 3u);
  EXPECT_EQ(stats.retries, 2u);
  EXPECT_EQ(stats.retry, 1u);
  EXPECT_EQ(stats.in_flight, 0u);
}

TEST(ClientNoRouter, AnUnansweredCallTimesOutAndIsRetriedWithItsTxid) {
  Socket silent(/*listen_on_it=*/true);
  ClientOptions options = Options(silent.endpoint());
  options.call_timeout_ms = 100;
  options.max_attempts = 2;
  options.retry_backoff_ms = 1;
  auto client = NewClient(options);
  ASSERT_NE(client, nullptr);
  Reply reply = client->Transfer(Request(1, 2, 5));
  EXPECT_EQ(reply.kind, Reply::Kind::kRetry) << reply.ToString();
  EXPECT_TRUE(reply.retries_exhausted);
  EXPECT_EQ(reply.attempts, 2);
  EXPECT_EQ(reply.txid.size(), 26u) << "a generated txid, kept for the caller's own retry";
  // (The message is the last send's: with one router, the retry found the link
  // still reset after the timeout, so it may say "not sent". The kind is what counts.)
}

TEST(ClientNoRouter, LocalChecksAnswerKProtocolWithoutSending) {
  Socket closed(/*listen_on_it=*/false);
  ClientOptions options = Options(closed.endpoint());
  options.max_attempts = 1;
  auto client = NewClient(options);
  ASSERT_NE(client, nullptr);
  for (const Reply& reply : {client->Deposit(1, 10, "has space"), client->Withdraw(1, 10, std::string(65, 't')),
                             client->Transfer(Request(1, 2, 1, "a\tb"))}) {
    EXPECT_EQ(reply.kind, Reply::Kind::kProtocol) << reply.ToString();
    EXPECT_EQ(reply.code, "MALFORMED");
    EXPECT_EQ(reply.attempts, 0);
  }
  EXPECT_EQ(client->stats().sends, 0u);
}

TEST(ClientNoRouter, ASynchronousCallFromAnAsyncCallbackIsRefusedNotDeadlocked) {
  Socket closed(/*listen_on_it=*/false);
  ClientOptions options = Options(closed.endpoint());
  options.max_attempts = 1;
  auto client = NewClient(options);
  ASSERT_NE(client, nullptr);
  std::promise<Reply> inner;
  client->DepositAsync(1, 10, "", [&](const Reply&) { inner.set_value(client->Ping()); });
  std::future<Reply> future = inner.get_future();
  ASSERT_EQ(future.wait_for(30s), std::future_status::ready);
  const Reply reply = future.get();
  EXPECT_EQ(reply.kind, Reply::Kind::kProtocol) << reply.ToString();
  EXPECT_NE(reply.message.find("deadlock"), std::string::npos) << reply.message;
}

// Past max_in_flight a call is answered BUSY at once, and the count of calls in
// flight comes back to 0 afterwards (the bound does not stick).
TEST(ClientNoRouter, OverloadAnswersBusyAndTheInFlightCountRecovers) {
  Socket closed(/*listen_on_it=*/false);
  ClientOptions options = Options(closed.endpoint());
  options.max_attempts = 3;
  options.retry_backoff_ms = 200;
  options.max_in_flight = 1;
  auto client = NewClient(options);
  ASSERT_NE(client, nullptr);
  std::promise<Reply> first;
  client->DepositAsync(1, 10, "first", [&](const Reply& reply) { first.set_value(reply); });
  std::promise<Reply> second;
  client->DepositAsync(1, 10, "second", [&](const Reply& reply) { second.set_value(reply); });
  std::future<Reply> second_future = second.get_future();
  ASSERT_EQ(second_future.wait_for(30s), std::future_status::ready);
  const Reply busy = second_future.get();
  EXPECT_EQ(busy.code, "BUSY") << busy.ToString();
  EXPECT_EQ(busy.kind, Reply::Kind::kRetry);
  EXPECT_EQ(busy.txid, "second");
  std::future<Reply> first_future = first.get_future();
  ASSERT_EQ(first_future.wait_for(30s), std::future_status::ready);
  EXPECT_EQ(first_future.get().code, "UNAVAILABLE");
  EXPECT_EQ(client->stats().in_flight, 0u);
  // The bound is free again: the next call is sent (and fails for want of a router).
  const Reply third = client->Deposit(1, 10, "third");
  EXPECT_EQ(third.code, "UNAVAILABLE") << third.ToString();
  EXPECT_EQ(third.attempts, 3);
}

// Destroying the client answers the calls in flight (kRetry, retries_exhausted),
// each exactly once: here calls sent and waiting for a reply.
TEST(ClientNoRouter, DestroyingTheClientAnswersCallsWaitingForAReply) {
  Socket silent(/*listen_on_it=*/true);
  ClientOptions options = Options(silent.endpoint());
  options.call_timeout_ms = 60'000;
  auto client = NewClient(options);
  ASSERT_NE(client, nullptr);
  constexpr int kCalls = 100;
  auto answered = std::make_shared<std::atomic<int>>(0);
  auto retry = std::make_shared<std::atomic<int>>(0);
  for (int i = 0; i < kCalls; ++i) {
    client->DepositAsync(1, 10, "", [answered, retry](const Reply& reply) {
      answered->fetch_add(1);
      if (reply.retryable() && reply.retries_exhausted) retry->fetch_add(1);
    });
  }
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (client->stats().sends < kCalls && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(5ms);
  client.reset();
  EXPECT_EQ(answered->load(), kCalls);
  EXPECT_EQ(retry->load(), kCalls);
}

// The same for a call waiting out its retry pause when the client is destroyed (the
// pause's timer never runs once the loop stops: the closing thread answers it).
TEST(ClientNoRouter, DestroyingTheClientAnswersACallWaitingToBeRetried) {
  Socket closed(/*listen_on_it=*/false);
  ClientOptions options = Options(closed.endpoint());
  options.max_attempts = 10;
  options.retry_backoff_ms = 5'000;
  auto client = NewClient(options);
  ASSERT_NE(client, nullptr);
  auto answered = std::make_shared<std::atomic<int>>(0);
  client->DepositAsync(1, 10, "", [answered](const Reply&) { answered->fetch_add(1); });
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (client->stats().sends < 1 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(5ms);
  std::this_thread::sleep_for(100ms);  // the first send failed; the retry waits 5 s
  client.reset();
  EXPECT_EQ(answered->load(), 1);
}

}  // namespace
}  // namespace wallet::client
