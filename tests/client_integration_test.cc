// client_integration_test.cc — the C++ client library (src/client/wallet_client.h)
// against a real local cluster: a real ZooKeeper, two wallet-shard processes (--zk)
// and two wallet-router processes, started by the harness (harness/cluster.h).
//
// What an application relies on: every call, synchronous and asynchronous (many
// thousands in flight), same- and cross-shard transfers in both modes, TRANSFER.BATCH;
// typed errors (rejections are final and never retried, malformed calls are
// kProtocol); generated txids (26 characters, unique, ordered by time); failover when
// a router is killed with SIGKILL; and a transfer whose first send timed out (its
// shard frozen with SIGSTOP) retried with the same txid and applied exactly once.
//
// Nothing asserts on timing: conditions are polled until they hold; the deadlines
// only bound how long a broken build can make a test wait.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/wallet_client.h"
#include "gtest/gtest.h"
#include "harness/cluster.h"

namespace wallet::test {
namespace {

using namespace std::chrono_literals;
using client::Reply;
using client::TransferMode;
using Kind = client::Reply::Kind;

constexpr uint32_t kPartitions = 16;
constexpr int kShardCount = 2;

client::TransferRequest Request(uint64_t from, uint64_t to, int64_t amount, std::string txid = "",
                                TransferMode mode = TransferMode::kDefault, std::string currency = "USD") {
  client::TransferRequest request;
  request.from = from;
  request.to = to;
  request.amount = amount;
  request.currency = std::move(currency);
  request.txid = std::move(txid);
  request.mode = mode;
  return request;
}

// The value of `name` in a TX record ("" when missing).
std::string Field(const client::TxFields& fields, const std::string& name) {
  for (const auto& [key, value] : fields) {
    if (key == name) return value;
  }
  return "";
}

std::string Text(const client::TxFields& fields) {
  std::string text;
  for (const auto& [key, value] : fields) absl::StrAppend(&text, key, "=", value, " ");
  return text;
}

// Counts async replies and lets the test wait for all of them. Callbacks share the
// counts (so a callback that runs after a failed test returned touches no freed memory).
class Replies {
 public:
  client::Client::Callback Callback() {
    return [state = state_](const Reply& reply) { state->Add(reply); };
  }
  void Add(const Reply& reply) { state_->Add(reply); }
  // Waits until `count` replies are in (false after the deadline).
  bool WaitFor(size_t count, std::chrono::seconds limit = 120s) {
    std::unique_lock<std::mutex> lock(state_->mutex);
    return state_->changed.wait_for(lock, limit, [&] { return state_->count >= count; });
  }
  size_t count() {
    std::lock_guard<std::mutex> lock(state_->mutex);
    return state_->count;
  }
  size_t ok() {
    std::lock_guard<std::mutex> lock(state_->mutex);
    return state_->by_kind[Kind::kOk];
  }
  std::string failures() {
    std::lock_guard<std::mutex> lock(state_->mutex);
    std::string text;
    for (const std::string& failure : state_->failures) absl::StrAppend(&text, failure, "; ");
    return text;
  }
  std::set<std::thread::id> threads() {
    std::lock_guard<std::mutex> lock(state_->mutex);
    return state_->threads;
  }

 private:
  struct State {
    void Add(const Reply& reply) {
      std::lock_guard<std::mutex> lock(mutex);
      ++count;
      ++by_kind[reply.kind];
      if (!reply.ok() && failures.size() < 5) failures.push_back(reply.ToString());
      threads.insert(std::this_thread::get_id());
      changed.notify_all();
    }
    std::mutex mutex;
    std::condition_variable changed;
    size_t count = 0;
    std::map<Kind, size_t> by_kind;
    std::vector<std::string> failures;
    std::set<std::thread::id> threads;
  };
  std::shared_ptr<State> state_ = std::make_shared<State>();
};

// Runs `body` in a thread until the guard is stopped or destroyed (also when an
// assertion returns early).
class Repeater {
 public:
  explicit Repeater(std::function<void()> body)
      : thread_([this, body = std::move(body)] {
          while (!stop_) body();
        }) {}
  ~Repeater() { Stop(); }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }

 private:
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

class ClientClusterTest : public ClusterTest {
 protected:
  ClientClusterTest() : ClusterTest(kShardCount, kPartitions) {}

  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(ClusterTest::SetUp());
    ASSERT_NO_FATAL_FAILURE(StartAllShards());
    for (const std::string id : {"router-a", "router-b"}) {
      ServerProcess* router = StartRouterProcess(id);
      ASSERT_NE(router, nullptr);
      ASSERT_TRUE(Eventually([&] { return InfoNumber(CallOnce(router->port(), {"INFO"}), "live_shards") == 2; }))
          << CallOnce(router->port(), {"INFO"});
      endpoints_.push_back(absl::StrCat("127.0.0.1:", router->port()));
    }
  }

  // A client of both routers, with `options`' settings (its endpoints are set here).
  std::unique_ptr<client::Client> NewClient(client::ClientOptions options = {}) {
    options.endpoints = endpoints_;
    absl::StatusOr<std::unique_ptr<client::Client>> made = client::Client::Create(std::move(options));
    EXPECT_TRUE(made.ok()) << made.status();
    return made.ok() ? std::move(*made) : nullptr;
  }

  // Opens `accounts` in USD through `c`.
  static void OpenAll(client::Client& c, const std::vector<uint64_t>& accounts) {
    for (uint64_t account : accounts) {
      const Reply reply = c.Open(account, "USD");
      ASSERT_TRUE(reply.ok()) << account << ": " << reply.ToString();
    }
  }

  static client::Balance BalanceOf(client::Client& c, uint64_t account) {
    client::Balance balance;
    const Reply reply = c.GetBalance(account, &balance);
    EXPECT_TRUE(reply.ok()) << account << ": " << reply.ToString();
    return balance;
  }

  // True once the account's available balance is `expected` (a cross-shard credit
  // may land a little after the transfer's OK).
  static bool AvailableBecomes(client::Client& c, uint64_t account, int64_t expected) {
    return Eventually([&] { return BalanceOf(c, account).available == expected; });
  }

  uint64_t On(const std::string& shard, size_t index) { return AccountsOn(shard, index + 1)[index]; }

  std::vector<std::string> endpoints_;
};

void ExpectOk(const Reply& reply, const std::string& what) {
  EXPECT_TRUE(reply.ok()) << what << ": " << reply.ToString();
  EXPECT_EQ(reply.attempts, 1) << what;
  EXPECT_FALSE(reply.retries_exhausted) << what;
}

// ---- Every call ---------------------------------------------------------------------

TEST_F(ClientClusterTest, EveryCallWorksSameAndCrossShardInBothModes) {
  auto c = NewClient();
  ASSERT_NE(c, nullptr);
  const Reply pong = c->Ping();
  ExpectOk(pong, "PING");
  EXPECT_EQ(pong.code, "");
  EXPECT_EQ(pong.ToString(), "OK");

  const uint64_t x0 = On("shard-0", 0), y0 = On("shard-0", 1), x1 = On("shard-1", 0), y1 = On("shard-1", 1);
  ASSERT_NO_FATAL_FAILURE(OpenAll(*c, {x0, y0, x1, y1}));
  ExpectOk(c->Open(x0, "USD"), "OPEN again (idempotent by account)");

  // Deposits and withdrawals, with given and generated txids; a replay changes nothing.
  Reply deposit = c->Deposit(x0, 10'000, "dep-x0");
  ExpectOk(deposit, "DEPOSIT");
  EXPECT_EQ(deposit.txid, "dep-x0");
  ExpectOk(c->Deposit(x0, 10'000, "dep-x0"), "DEPOSIT replay");
  const Reply generated = c->Deposit(x1, 10'000);
  ExpectOk(generated, "DEPOSIT with a generated txid");
  EXPECT_EQ(generated.txid.size(), 26u) << generated.txid;
  ExpectOk(c->Withdraw(x0, 1'000, "wd-x0"), "WITHDRAW");
  ExpectOk(c->Withdraw(x0, 1'000, "wd-x0"), "WITHDRAW replay");
  const Reply withdraw_generated = c->Withdraw(x1, 500);
  ExpectOk(withdraw_generated, "WITHDRAW with a generated txid");
  EXPECT_EQ(withdraw_generated.txid.size(), 26u);

  // Same-shard transfers (MODE does not matter there), each replayed once.
  ExpectOk(c->Transfer(Request(x0, y0, 500, "local-0")), "same-shard TRANSFER");
  ExpectOk(c->Transfer(Request(x0, y0, 500, "local-0")), "same-shard TRANSFER replay");
  ExpectOk(c->Transfer(Request(x1, y1, 400, "local-1", TransferMode::kTcc)), "same-shard TRANSFER MODE tcc");
  ExpectOk(c->Transfer(Request(x1, y1, 100, "local-2", TransferMode::kSaga)), "same-shard TRANSFER MODE saga");

  // Cross-shard: the router's default mode, tcc and saga, each replayed.
  ExpectOk(c->Transfer(Request(x0, x1, 100, "cross-default")), "cross-shard TRANSFER");
  ExpectOk(c->Transfer(Request(x0, x1, 200, "cross-tcc", TransferMode::kTcc)), "cross-shard tcc");
  ExpectOk(c->Transfer(Request(x0, x1, 300, "cross-saga", TransferMode::kSaga)), "cross-shard saga");
  ExpectOk(c->Transfer(Request(y1, y0, 50)), "cross-shard, generated txid");
  for (const auto& [txid, mode] : std::vector<std::pair<std::string, TransferMode>>{
           {"cross-default", TransferMode::kDefault}, {"cross-tcc", TransferMode::kTcc}}) {
    ExpectOk(c->Transfer(Request(x0, x1, txid == "cross-tcc" ? 200 : 100, txid, mode)), "cross-shard replay " + txid);
  }
  ExpectOk(c->Transfer(Request(x0, x1, 300, "cross-saga", TransferMode::kSaga)), "cross-shard replay saga");

  // x0: 10000 - 1000 - 500 - 100 - 200 - 300 = 7900; y0: 500 + 50; x1: 10000 - 500 - 500 + 600;
  // y1: 500 - 50.
  EXPECT_TRUE(AvailableBecomes(*c, x0, 7'900)) << BalanceOf(*c, x0).available;
  EXPECT_TRUE(AvailableBecomes(*c, y0, 550)) << BalanceOf(*c, y0).available;
  EXPECT_TRUE(AvailableBecomes(*c, x1, 9'600)) << BalanceOf(*c, x1).available;
  EXPECT_TRUE(AvailableBecomes(*c, y1, 450)) << BalanceOf(*c, y1).available;
  const client::Balance balance = BalanceOf(*c, x0);
  EXPECT_EQ(balance.held, 0);
  EXPECT_EQ(balance.currency, "USD");

  // TX: the records, and an empty one (still OK) for an unknown txid.
  client::TxFields fields;
  Reply tx = c->GetTx("local-0", &fields);
  ExpectOk(tx, "TX local-0");
  EXPECT_EQ(tx.txid, "local-0");
  EXPECT_EQ(Field(fields, "kind"), "local") << Text(fields);
  EXPECT_EQ(Field(fields, "amount"), "500") << Text(fields);
  EXPECT_EQ(Field(fields, "shard"), "shard-0") << Text(fields);
  ExpectOk(c->GetTx(generated.txid, &fields), "TX of a generated txid");
  EXPECT_EQ(Field(fields, "amount"), "10000") << Text(fields);
  EXPECT_EQ(Field(fields, "shard"), "shard-1") << Text(fields);
  ExpectOk(c->GetTx("cross-saga", &fields), "TX cross-saga");
  EXPECT_EQ(Field(fields, "kind"), "saga") << Text(fields);
  EXPECT_TRUE(Eventually([&] {
    return c->GetTx("cross-tcc", &fields).ok() && Field(fields, "row.phase") == "committed";
  })) << Text(fields);
  ExpectOk(c->GetTx("never-used", &fields), "TX of an unknown txid");
  EXPECT_TRUE(fields.empty()) << Text(fields);

  const client::Client::Stats stats = c->stats();
  EXPECT_EQ(stats.retries, 0u);
  EXPECT_EQ(stats.sends, stats.calls);
  EXPECT_EQ(stats.rejected + stats.retry + stats.protocol, 0u);
  EXPECT_EQ(stats.ok, stats.calls);
  EXPECT_EQ(stats.in_flight, 0u);
}

// ---- Typed errors -------------------------------------------------------------------

TEST_F(ClientClusterTest, RejectionsAreKRejectedAndNeverRetriedMalformedCallsAreKProtocol) {
  auto c = NewClient();
  ASSERT_NE(c, nullptr);
  const uint64_t x0 = On("shard-0", 0), y0 = On("shard-0", 1), x1 = On("shard-1", 0);
  const uint64_t never_opened = On("shard-1", 5);
  ASSERT_NO_FATAL_FAILURE(OpenAll(*c, {x0, y0, x1}));
  ASSERT_TRUE(c->Open(On("shard-0", 2), "EUR").ok());
  ASSERT_TRUE(c->Deposit(x0, 1'000, "fund-x0").ok());
  ASSERT_TRUE(c->Deposit(x1, 1'000, "fund-x1").ok());
  ASSERT_TRUE(c->Transfer(Request(x0, y0, 10, "used-once")).ok());

  const std::vector<std::pair<std::string, Reply>> rejected = {
      {"INSUFFICIENT_FUNDS", c->Withdraw(x0, 1'000'000, "too-much")},
      {"INSUFFICIENT_FUNDS", c->Transfer(Request(x0, y0, 1'000'000, "too-much-local"))},
      {"INSUFFICIENT_FUNDS", c->Transfer(Request(x0, x1, 1'000'000, "too-much-tcc", TransferMode::kTcc))},
      {"INSUFFICIENT_FUNDS", c->Transfer(Request(x0, x1, 1'000'000, "too-much-saga", TransferMode::kSaga))},
      {"UNKNOWN_ACCOUNT", c->Deposit(never_opened, 5, "to-nowhere")},
      {"UNKNOWN_ACCOUNT", c->Transfer(Request(x1, never_opened, 5, "to-nowhere-t"))},
      {"CURRENCY_MISMATCH", c->Transfer(Request(x0, y0, 5, "in-euros", TransferMode::kDefault, "EUR"))},
      {"CURRENCY_MISMATCH", c->Transfer(Request(x0, On("shard-0", 2), 5, "usd-to-eur"))},
      {"SAME_ACCOUNT", c->Transfer(Request(x0, x0, 5, "to-self"))},
      {"TXID_REUSED", c->Transfer(Request(x0, y0, 11, "used-once"))},
      {"TXID_REUSED", c->Deposit(x0, 10, "used-once")},
      {"ACCOUNT_EXISTS", c->Open(x0, "EUR")},
  };
  for (const auto& [code, reply] : rejected) {
    SCOPED_TRACE(code + " / " + reply.txid);
    EXPECT_EQ(reply.kind, Kind::kRejected) << reply.ToString();
    EXPECT_TRUE(reply.rejected());
    EXPECT_FALSE(reply.retryable());
    EXPECT_EQ(reply.code, code) << reply.ToString();
    EXPECT_FALSE(reply.message.empty());
    EXPECT_EQ(reply.attempts, 1) << "a rejection is never retried";
    EXPECT_FALSE(reply.retries_exhausted);
  }
  Reply unknown = c->GetBalance(never_opened, nullptr);
  EXPECT_EQ(unknown.kind, Kind::kRejected) << unknown.ToString();
  EXPECT_EQ(unknown.code, "UNKNOWN_ACCOUNT");

  // Malformed calls: the router's MALFORMED, sent once; a bad txid is refused locally.
  const std::vector<Reply> malformed = {
      c->Open(x0, "usd"),
      c->Open(y0, "EURO"),
      c->Deposit(x0, 0, "zero"),
      c->Deposit(x0, -5, "negative"),
      c->Withdraw(x0, 0, "zero-wd"),
      c->Transfer(Request(x0, y0, 0, "zero-t")),
      c->Transfer(Request(x0, y0, 5, "bad-currency", TransferMode::kDefault, "usd")),
  };
  for (const Reply& reply : malformed) {
    EXPECT_EQ(reply.kind, Kind::kProtocol) << reply.ToString();
    EXPECT_EQ(reply.code, "MALFORMED") << reply.ToString();
    EXPECT_EQ(reply.attempts, 1);
  }
  std::promise<Reply> async_bad_txid;
  c->TransferAsync(Request(x0, y0, 5, "has space"), [&](const Reply& reply) { async_bad_txid.set_value(reply); });
  const Reply routed = async_bad_txid.get_future().get();
  EXPECT_EQ(routed.kind, Kind::kProtocol) << routed.ToString();
  EXPECT_EQ(routed.attempts, 1);
  const uint64_t sends_before = c->stats().sends;
  const Reply local = c->Transfer(Request(x0, y0, 5, std::string(65, 't')));
  EXPECT_EQ(local.kind, Kind::kProtocol) << local.ToString();
  EXPECT_EQ(local.attempts, 0);
  EXPECT_EQ(c->stats().sends, sends_before) << "a txid the API refuses is not sent";

  // Nothing moved, and nothing was retried.
  EXPECT_TRUE(AvailableBecomes(*c, x0, 990)) << BalanceOf(*c, x0).available;
  EXPECT_TRUE(AvailableBecomes(*c, x1, 1'000)) << BalanceOf(*c, x1).available;
  EXPECT_EQ(BalanceOf(*c, x0).held, 0);
  EXPECT_EQ(BalanceOf(*c, y0).available, 10);
  const client::Client::Stats stats = c->stats();
  EXPECT_EQ(stats.retries, 0u);
  EXPECT_EQ(stats.rejected, rejected.size() + 1);
  EXPECT_EQ(stats.protocol, malformed.size() + 1);
}

// ---- Transaction ids ------------------------------------------------------------------

TEST_F(ClientClusterTest, GeneratedTxidsAre26CharactersUniqueAndOrderedByTime) {
  auto c = NewClient();
  ASSERT_NE(c, nullptr);
  const uint64_t x0 = On("shard-0", 0), x1 = On("shard-1", 0);
  ASSERT_NO_FATAL_FAILURE(OpenAll(*c, {x0, x1}));
  std::vector<std::string> txids;
  for (int i = 0; i < 200; ++i) {
    const Reply reply = c->Deposit(i % 2 == 0 ? x0 : x1, 1);
    ASSERT_TRUE(reply.ok()) << reply.ToString();
    txids.push_back(reply.txid);
  }
  for (size_t i = 0; i < txids.size(); ++i) {
    ASSERT_EQ(txids[i].size(), 26u) << txids[i];
    ASSERT_EQ(txids[i].find_first_not_of("0123456789ABCDEFGHJKMNPQRSTVWXYZ"), std::string::npos) << txids[i];
    if (i > 0) {
      EXPECT_LT(txids[i - 1], txids[i]) << "made later, sorts later";
    }
  }
  EXPECT_EQ(std::set<std::string>(txids.begin(), txids.end()).size(), txids.size());
  // The shards recorded them as given.
  client::TxFields fields;
  ASSERT_TRUE(c->GetTx(txids[0], &fields).ok());
  EXPECT_EQ(Field(fields, "shard"), "shard-0") << Text(fields);
  EXPECT_EQ(BalanceOf(*c, x0).available, 100);
  EXPECT_EQ(BalanceOf(*c, x1).available, 100);

  // Two clients in two threads at once: still unique.
  auto other = NewClient();
  ASSERT_NE(other, nullptr);
  std::vector<std::string> a, b;
  std::thread first([&] {
    for (int i = 0; i < 300; ++i) a.push_back(c->Deposit(x0, 1).txid);
  });
  std::thread second([&] {
    for (int i = 0; i < 300; ++i) b.push_back(other->Deposit(x1, 1).txid);
  });
  first.join();
  second.join();
  std::set<std::string> all(a.begin(), a.end());
  all.insert(b.begin(), b.end());
  EXPECT_EQ(all.size(), 600u);
  EXPECT_TRUE(std::is_sorted(a.begin(), a.end()));
  EXPECT_EQ(BalanceOf(*c, x0).available, 400);
  EXPECT_EQ(BalanceOf(*c, x1).available, 400);
}

// ---- Asynchronous calls ----------------------------------------------------------------

TEST_F(ClientClusterTest, AsyncCallsWithManyThousandsInFlight) {
  client::ClientOptions options;
  options.connections_per_endpoint = 2;
  auto c = NewClient(options);
  ASSERT_NE(c, nullptr);
  const uint64_t x0 = On("shard-0", 0), y0 = On("shard-0", 1), x1 = On("shard-1", 0), y1 = On("shard-1", 1);
  const std::vector<uint64_t> accounts = {x0, y0, x1, y1};
  Replies opened;
  for (uint64_t account : accounts) c->OpenAsync(account, "USD", opened.Callback());
  ASSERT_TRUE(opened.WaitFor(accounts.size()));
  ASSERT_EQ(opened.ok(), accounts.size()) << opened.failures();

  // 20 000 deposits of 1, all submitted before the first answers are waited for.
  constexpr size_t kDeposits = 20'000;
  Replies deposits;
  uint64_t most_in_flight = 0;
  for (size_t i = 0; i < kDeposits; ++i) {
    c->DepositAsync(accounts[i % accounts.size()], 1, "", deposits.Callback());
    most_in_flight = std::max(most_in_flight, c->stats().in_flight);
  }
  ASSERT_TRUE(deposits.WaitFor(kDeposits)) << deposits.count() << " of " << kDeposits;
  EXPECT_EQ(deposits.ok(), kDeposits) << deposits.failures();
  EXPECT_GT(most_in_flight, 100u) << "the calls were not in flight together";
  EXPECT_EQ(deposits.threads().size(), 1u) << "callbacks run on the client's one I/O thread";
  EXPECT_EQ(deposits.threads().count(std::this_thread::get_id()), 0u);

  // Transfers: same-shard and cross-shard in both modes, all at once; each account
  // sends and receives the same amount, so every balance ends where it began.
  Replies transfers;
  size_t sent = 0;
  for (int round = 0; round < 100; ++round) {
    const TransferMode mode = round % 2 == 0 ? TransferMode::kTcc : TransferMode::kSaga;
    for (const auto& [from, to] : std::vector<std::pair<uint64_t, uint64_t>>{
             {x0, y0}, {y0, x1}, {x1, y1}, {y1, x0}}) {
      c->TransferAsync(Request(from, to, 3, "", mode), transfers.Callback());
      ++sent;
    }
  }
  ASSERT_TRUE(transfers.WaitFor(sent));
  EXPECT_EQ(transfers.ok(), sent) << transfers.failures();

  // Balances through GetBalanceAsync; a callback that starts another async call.
  std::mutex mutex;
  std::map<uint64_t, client::Balance> balances;
  Replies reads;
  for (uint64_t account : accounts) {
    c->GetBalanceAsync(account, [&, account](const Reply& reply, const client::Balance& balance) {
      {
        std::lock_guard<std::mutex> lock(mutex);
        balances[account] = balance;
      }
      reads.Add(reply);
    });
  }
  ASSERT_TRUE(reads.WaitFor(accounts.size()));
  EXPECT_EQ(reads.ok(), accounts.size()) << reads.failures();
  for (uint64_t account : accounts) {
    EXPECT_TRUE(AvailableBecomes(*c, account, kDeposits / accounts.size())) << account;
    EXPECT_EQ(BalanceOf(*c, account).held, 0);
  }
  Replies chained;
  c->DepositAsync(x0, 7, "", [&](const Reply& first) {
    chained.Add(first);
    c->DepositAsync(x1, 7, "", chained.Callback());  // from the I/O thread itself
  });
  ASSERT_TRUE(chained.WaitFor(2));
  EXPECT_EQ(chained.ok(), 2u) << chained.failures();
  EXPECT_EQ(c->stats().in_flight, 0u);
  EXPECT_EQ(c->stats().retries, 0u);
}

// ---- TRANSFER.BATCH -----------------------------------------------------------------------

TEST_F(ClientClusterTest, TransferBatchAnswersEachTransferInOrder) {
  auto c = NewClient();
  ASSERT_NE(c, nullptr);
  const uint64_t x0 = On("shard-0", 0), y0 = On("shard-0", 1), x1 = On("shard-1", 0), y1 = On("shard-1", 1);
  const uint64_t z1 = On("shard-1", 2), never_opened = On("shard-1", 5);
  ASSERT_NO_FATAL_FAILURE(OpenAll(*c, {x0, y0, x1, y1, z1}));
  ASSERT_TRUE(c->Deposit(x0, 10'000, "fund-x0").ok());
  ASSERT_TRUE(c->Deposit(x1, 10'000, "fund-x1").ok());

  const std::vector<Reply> probe = c->TransferBatch({Request(x0, y0, 1, "probe")});
  ASSERT_EQ(probe.size(), 1u);
  if (probe[0].code == "UNKNOWN_COMMAND") {
    GTEST_SKIP() << "wallet-router does not know TRANSFER.BATCH yet (it answered " << probe[0].ToString()
                 << "); this test runs once the router has it";
  }
  ASSERT_TRUE(probe[0].ok()) << probe[0].ToString();

  std::vector<client::TransferRequest> batch = {
      Request(x0, y0, 100),                                        // same shard, generated txid
      Request(x0, x1, 200, "b-cross"),                             // cross-shard, default mode
      Request(x0, y0, 1'000'000, "b-too-much"),                    // rejected
      Request(z1, x1, 5, "b-no-funds"),                            // rejected: z1 has nothing
      Request(x1, never_opened, 5, "b-nowhere"),                   // rejected: unknown account
      Request(x1, x0, 300, "b-saga", TransferMode::kSaga),         // cross-shard saga
      Request(x1, y1, 400, "b-local-tcc", TransferMode::kTcc),     // same shard, MODE tcc
      Request(x0, x0, 1, "b-self"),                                // rejected: same account
  };
  const std::vector<std::pair<Kind, std::string>> expected = {
      {Kind::kOk, ""},
      {Kind::kOk, ""},
      {Kind::kRejected, "INSUFFICIENT_FUNDS"},
      {Kind::kRejected, "INSUFFICIENT_FUNDS"},
      {Kind::kRejected, "UNKNOWN_ACCOUNT"},
      {Kind::kOk, ""},
      {Kind::kOk, ""},
      {Kind::kRejected, "SAME_ACCOUNT"},
  };
  std::vector<Reply> replies = c->TransferBatch(batch);
  ASSERT_EQ(replies.size(), batch.size());
  for (size_t i = 0; i < replies.size(); ++i) {
    SCOPED_TRACE(absl::StrCat("item ", i));
    EXPECT_EQ(replies[i].kind, expected[i].first) << replies[i].ToString();
    EXPECT_EQ(replies[i].code, expected[i].second) << replies[i].ToString();
    EXPECT_EQ(replies[i].attempts, 1);
    if (!batch[i].txid.empty()) {
      EXPECT_EQ(replies[i].txid, batch[i].txid);
    }
  }
  EXPECT_EQ(replies[0].txid.size(), 26u) << "a txid was made for the item without one";
  // x0: 10000 - 1 - 100 - 200 + 300; y0: 1 + 100; x1: 10000 + 200 - 300 - 400; y1: 400.
  EXPECT_TRUE(AvailableBecomes(*c, x0, 9'999)) << BalanceOf(*c, x0).available;
  EXPECT_TRUE(AvailableBecomes(*c, y0, 101)) << BalanceOf(*c, y0).available;
  EXPECT_TRUE(AvailableBecomes(*c, x1, 9'500)) << BalanceOf(*c, x1).available;
  EXPECT_TRUE(AvailableBecomes(*c, y1, 400)) << BalanceOf(*c, y1).available;

  // The same batch again with the same txids: the same answers, nothing moves again.
  batch[0].txid = replies[0].txid;
  const std::vector<Reply> again = c->TransferBatch(batch);
  ASSERT_EQ(again.size(), batch.size());
  for (size_t i = 0; i < again.size(); ++i) {
    EXPECT_EQ(again[i].kind, expected[i].first) << "item " << i << ": " << again[i].ToString();
    EXPECT_EQ(again[i].txid, batch[i].txid);
  }
  EXPECT_EQ(BalanceOf(*c, x0).available, 9'999);
  EXPECT_EQ(BalanceOf(*c, x1).available, 9'500);
  EXPECT_EQ(BalanceOf(*c, y0).available, 101);

  // Async: 1000 same-shard transfers in one call, one callback with 1000 replies.
  std::vector<client::TransferRequest> many;
  for (int i = 0; i < 1'000; ++i) many.push_back(Request(x0, y0, 1));
  std::promise<std::vector<Reply>> done;
  c->TransferBatchAsync(many, [&](std::vector<Reply> all) { done.set_value(std::move(all)); });
  const std::vector<Reply> all = done.get_future().get();
  ASSERT_EQ(all.size(), many.size());
  std::set<std::string> txids;
  for (const Reply& reply : all) {
    EXPECT_TRUE(reply.ok()) << reply.ToString();
    txids.insert(reply.txid);
  }
  EXPECT_EQ(txids.size(), many.size());
  EXPECT_EQ(BalanceOf(*c, x0).available, 8'999);
  EXPECT_EQ(BalanceOf(*c, y0).available, 1'101);
  EXPECT_EQ(c->stats().retries, 0u);
}

// A batch larger than one command may carry (the link's bound of 8192 arguments,
// 1637 transfers) goes as several TRANSFER.BATCH commands; the replies come back in
// order, one per transfer.
TEST_F(ClientClusterTest, TransferBatchOfTwoThousandTransfersIsSplit) {
  auto c = NewClient();
  ASSERT_NE(c, nullptr);
  const uint64_t x0 = On("shard-0", 0), y0 = On("shard-0", 1);
  ASSERT_NO_FATAL_FAILURE(OpenAll(*c, {x0, y0}));
  ASSERT_TRUE(c->Deposit(x0, 10'000, "fund").ok());
  std::vector<client::TransferRequest> many;
  for (int i = 0; i < 2'000; ++i) many.push_back(Request(x0, y0, 1));
  const std::vector<Reply> all = c->TransferBatch(many);
  ASSERT_EQ(all.size(), many.size());
  if (all[0].code == "UNKNOWN_COMMAND") {
    GTEST_SKIP() << "wallet-router does not know TRANSFER.BATCH yet";
  }
  size_t ok = 0;
  for (const Reply& reply : all) ok += reply.ok() ? 1 : 0;
  EXPECT_EQ(ok, many.size()) << all[0].ToString();
  std::set<std::string> txids;
  for (size_t i = 0; i < all.size(); ++i) {
    txids.insert(all[i].txid);
    if (i > 0) {
      EXPECT_LT(all[i - 1].txid, all[i].txid) << "replies in the requests' order (txids made in order)";
    }
  }
  EXPECT_EQ(txids.size(), many.size());
  EXPECT_EQ(BalanceOf(*c, x0).available, 8'000);
  EXPECT_EQ(BalanceOf(*c, y0).available, 2'000);
}

// ---- Failover ---------------------------------------------------------------------------

TEST_F(ClientClusterTest, CallsKeepSucceedingThroughTheOtherRouterWhenOneIsKilled) {
  client::ClientOptions options;
  options.max_attempts = 10;
  auto c = NewClient(options);
  ASSERT_NE(c, nullptr);
  const uint64_t x0 = On("shard-0", 0), x1 = On("shard-1", 0);
  ASSERT_NO_FATAL_FAILURE(OpenAll(*c, {x0, x1}));

  // One thread makes synchronous deposits all along; async bursts come on top.
  std::atomic<int64_t> sync_ok{0};
  std::atomic<int64_t> sync_ok_x0{0};
  std::atomic<int> turn{0};
  std::mutex mutex;
  std::vector<std::string> sync_failures;
  Repeater depositor([&] {
    const uint64_t account = turn++ % 2 == 0 ? x0 : x1;
    const Reply reply = c->Deposit(account, 1);
    if (reply.ok()) {
      ++sync_ok;
      if (account == x0) ++sync_ok_x0;
    } else {
      std::lock_guard<std::mutex> lock(mutex);
      sync_failures.push_back(reply.ToString());
    }
  });
  ASSERT_TRUE(Eventually([&] { return sync_ok >= 200; }));

  constexpr size_t kAsync = 5'000;
  Replies burst;
  for (size_t i = 0; i < kAsync; ++i) {
    c->DepositAsync(i % 2 == 0 ? x0 : x1, 10, "", burst.Callback());
    if (i == kAsync / 2) {
      // Mid-burst, with calls in flight on both routers: router-a dies at once.
      EXPECT_TRUE(routers_.at("router-a")->process().Signal(SIGKILL).ok());
    }
  }
  ASSERT_TRUE(burst.WaitFor(kAsync));
  const int64_t after_kill = sync_ok;
  ASSERT_TRUE(Eventually([&] { return sync_ok >= after_kill + 300; }));
  depositor.Stop();
  EXPECT_EQ(routers_.at("router-a")->Stop().signal, SIGKILL);

  EXPECT_EQ(burst.ok(), kAsync) << burst.failures();
  {
    std::lock_guard<std::mutex> lock(mutex);
    EXPECT_TRUE(sync_failures.empty()) << sync_failures.size() << " failed, first: " << sync_failures.front();
  }
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(c->Ping().ok());
  const client::Client::Stats stats = c->stats();
  EXPECT_GT(stats.failovers, 0u);
  EXPECT_GT(stats.retries, 0u);
  EXPECT_EQ(stats.retry + stats.rejected + stats.protocol, 0u);
  // Every deposit applied exactly once, retried ones included.
  EXPECT_EQ(BalanceOf(*c, x0).available, sync_ok_x0 + static_cast<int64_t>(kAsync / 2) * 10);
  EXPECT_EQ(BalanceOf(*c, x1).available, (sync_ok - sync_ok_x0) + static_cast<int64_t>(kAsync / 2) * 10);
}

// ---- A timed-out transfer, retried -----------------------------------------------------------

TEST_F(ClientClusterTest, ATransferWhoseFirstSendTimedOutIsRetriedWithItsTxidAndAppliedOnce) {
  client::ClientOptions options;
  options.call_timeout_ms = 300;  // below the routers' --command_timeout_ms=1000
  options.max_attempts = 40;
  options.retry_backoff_ms = 50;
  auto c = NewClient(options);
  ASSERT_NE(c, nullptr);
  const uint64_t x = On("shard-0", 0), y = On("shard-0", 1);
  ASSERT_NO_FATAL_FAILURE(OpenAll(*c, {x, y}));
  ASSERT_TRUE(c->Deposit(x, 1'000, "fund").ok());

  // The owning shard stops answering (SIGSTOP): the router's send waits, the client's
  // first send times out, its retries (same txid) go to the other router and wait too.
  ChildProcess& shard = shards_.at("shard-0")->process();
  ASSERT_TRUE(shard.Freeze().ok());
  std::future<Reply> transfer =
      std::async(std::launch::async, [&] { return c->Transfer(Request(x, y, 250, "slow-transfer")); });
  const bool retried = Eventually([&] { return c->stats().retries >= 2; });
  ASSERT_TRUE(shard.Thaw().ok());
  ASSERT_TRUE(retried) << "the first send did not time out";

  const Reply reply = transfer.get();
  EXPECT_TRUE(reply.ok()) << reply.ToString();
  EXPECT_EQ(reply.txid, "slow-transfer");
  EXPECT_GE(reply.attempts, 3);
  // The money moved exactly once, though the shard got the transfer several times.
  EXPECT_EQ(BalanceOf(*c, x).available, 750);
  EXPECT_EQ(BalanceOf(*c, y).available, 250);
  client::TxFields fields;
  ASSERT_TRUE(c->GetTx("slow-transfer", &fields).ok());
  EXPECT_EQ(Field(fields, "amount"), "250") << Text(fields);
  EXPECT_EQ(Field(fields, "kind"), "local") << Text(fields);
  // And a repeat by the application changes nothing either.
  const Reply repeat = c->Transfer(Request(x, y, 250, "slow-transfer"));
  EXPECT_TRUE(repeat.ok()) << repeat.ToString();
  EXPECT_EQ(BalanceOf(*c, x).available, 750);
  EXPECT_EQ(BalanceOf(*c, y).available, 250);
  EXPECT_TRUE(absl::StrContains(CallOnce(ShardPort("shard-0"), {"AUDIT"}), "conserved, :1"));
}

// ---- AUTH ---------------------------------------------------------------------------------

TEST_F(ClientClusterTest, ClientAuthenticatesWithThePassword) {
  ServerProcess* locked = StartRouterProcess("router-locked", {"--password=s3cret"});
  ASSERT_NE(locked, nullptr);
  client::ClientOptions options;
  options.endpoints = {absl::StrCat("127.0.0.1:", locked->port())};
  options.password = "s3cret";
  absl::StatusOr<std::unique_ptr<client::Client>> c = client::Client::Create(options);
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(Eventually([&] { return (*c)->Open(On("shard-1", 0), "USD").ok(); }));
  EXPECT_TRUE((*c)->Ping().ok());

  // A wrong password: nothing gets through (kRetry once the attempts are spent).
  options.password = "wrong";
  options.max_attempts = 2;
  absl::StatusOr<std::unique_ptr<client::Client>> refused = client::Client::Create(options);
  ASSERT_TRUE(refused.ok()) << refused.status();
  const Reply reply = (*refused)->Ping();
  EXPECT_FALSE(reply.ok()) << reply.ToString();
  EXPECT_TRUE(reply.retries_exhausted) << reply.ToString();
}

}  // namespace
}  // namespace wallet::test
