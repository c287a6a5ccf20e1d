// router_integration_test.cc — wallet-router processes in front of a real cluster:
// a real ZooKeeper (Debian's package, started by the harness), wallet-shard
// processes started with --zk, wallet-router processes, real sockets, hiredis as the
// client.
//
// Each test bootstraps cluster "c" (3 shards, 16 partitions: shard-0 owns 0-4,
// shard-1 5-9, shard-2 10-15), starts what it needs and checks what a client of the
// routers sees: every call through either router, strict argument checks with no
// shard round trip, same-shard transfers, cross-shard refusals that change nothing,
// a map change under traffic, a stale map corrected by a MOVED retry, a router
// killed and restarted, ZooKeeper away, a shard's session expiring, and AUTH on both
// sides of the router.
//
// Nothing asserts on timing: conditions are polled until they hold; the deadlines
// only bound how long a broken build can make a test wait.
#include <hiredis/hiredis.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "cluster/layout.h"
#include "cluster/zk_client.h"
#include "common/partition.h"
#include "gtest/gtest.h"
#include "harness/cluster.h"

namespace wallet::test {
namespace {

using namespace std::chrono_literals;
using Client = RespClient;

constexpr uint32_t kPartitions = 16;
constexpr int kShardCount = 3;

// One HTTP/1.0 GET over a new connection: the whole response ("" on failure).
std::string HttpGet(uint16_t port, const std::string& path) {
  struct timeval timeout = {10, 0};
  redisContext* context = redisConnectWithTimeout("127.0.0.1", port, timeout);  // a plain TCP connect
  if (context == nullptr || context->err) {
    if (context != nullptr) redisFree(context);
    return "";
  }
  const int fd = context->fd;
  const std::string request = absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
  std::string response;
  if (write(fd, request.data(), request.size()) == static_cast<ssize_t>(request.size())) {
    char chunk[4096];
    for (ssize_t n; (n = read(fd, chunk, sizeof(chunk))) > 0;) response.append(chunk, static_cast<size_t>(n));
  }
  redisFree(context);
  return response;
}

class RouterClusterTest : public ClusterTest {
 protected:
  RouterClusterTest() : ClusterTest(kShardCount, kPartitions) {}

  // Starts router `id` and waits until it routes to every running shard.
  ServerProcess* StartRouter(const std::string& id, const Args& extra = {}, bool wait_for_shards = true) {
    ServerProcess* process = StartRouterProcess(id, extra);
    if (process != nullptr && wait_for_shards) {
      EXPECT_TRUE(Eventually([&] { return InfoNumber(Info(process->port()), "live_shards") == shards_.size(); }))
          << Info(process->port());
    }
    return process;
  }

  std::string Info(uint16_t port, const std::string& section = "") {
    return section.empty() ? CallOnce(port, {"INFO"}) : CallOnce(port, {"INFO", section});
  }
};

std::string S(uint64_t value) { return absl::StrCat(value); }

TEST_F(RouterClusterTest, EveryCallThroughEitherRouterReachesAccountsOnEveryShard) {
  ASSERT_NO_FATAL_FAILURE(StartAllShards());
  ServerProcess* routers[2] = {
      StartRouter("router-a"),
      StartRouter("router-b", {"--http_port=0", "--http_ready_file=" + dir_->File("router-b.http")})};
  ASSERT_TRUE(routers[0] != nullptr && routers[1] != nullptr);
  Client a(routers[0]->port());
  Client b(routers[1]->port());
  Client* clients[2] = {&a, &b};
  EXPECT_EQ(a.Call({"PING"}), "+PONG");
  EXPECT_EQ(b.Call({"PING", "hello"}), "hello");

  for (int s = 0; s < kShardCount; ++s) {
    const std::string shard = cluster::ShardIdFor(s);
    SCOPED_TRACE(shard);
    const std::vector<uint64_t> accounts = AccountsOn(shard, 2);
    const std::string x = S(accounts[0]), y = S(accounts[1]);
    Client& one = *clients[s % 2];
    Client& other = *clients[(s + 1) % 2];
    EXPECT_EQ(one.Call({"OPEN", x, "USD"}), "+OK");
    EXPECT_EQ(other.Call({"OPEN", y, "USD"}), "+OK");
    EXPECT_EQ(other.Call({"OPEN", x, "USD"}), "+OK");  // idempotent by account
    EXPECT_EQ(one.Call({"DEPOSIT", x, "1000", "dep-" + shard}), "+OK");
    EXPECT_EQ(other.Call({"WITHDRAW", x, "100", "wd-" + shard}), "+OK");
    EXPECT_EQ(one.Call({"TRANSFER", x, y, "250", "USD", "tx-" + shard}), "+OK");
    EXPECT_EQ(other.Call({"TRANSFER", x, y, "250", "USD", "tx-" + shard}), "+OK");  // replay: no change
    EXPECT_EQ(Word(one.Call({"TRANSFER", x, y, "251", "USD", "tx-" + shard})), "TXID_REUSED");
    EXPECT_EQ(one.Call({"TRANSFER", y, x, "50", "USD", "back-" + shard, "MODE", "saga"}), "+OK");
    EXPECT_EQ(one.Call({"TRANSFER", y, x, "10", "USD", "tcc-" + shard, "mode", "TCC"}), "+OK");
    EXPECT_EQ(Word(other.Call({"WITHDRAW", y, "1000000", "big-" + shard})), "INSUFFICIENT_FUNDS");
    EXPECT_EQ(other.Call({"BALANCE", x}), "[:710, :0, USD]");
    EXPECT_EQ(one.Call({"BALANCE", y}), "[:190, :0, USD]");
    // The shard itself holds what the routers said.
    EXPECT_EQ(CallOnce(ShardPort(shard), {"BALANCE", x}), "[:710, :0, USD]");
    const std::string tx = other.Call({"TX", "tx-" + shard});
    EXPECT_TRUE(absl::StrContains(tx, "kind, local")) << tx;
    EXPECT_TRUE(absl::StrContains(tx, "amount, :250")) << tx;
    EXPECT_TRUE(absl::EndsWith(tx, "shard, " + shard + "]")) << tx;
    EXPECT_EQ(one.Call({"TX", "never-used-" + shard}), "(nil)");
    EXPECT_EQ(Word(one.Call({"BALANCE", S(AccountsOn(shard, 3)[2])})), "UNKNOWN_ACCOUNT");
    EXPECT_TRUE(absl::StrContains(CallOnce(ShardPort(shard), {"AUDIT"}), "conserved, :1"));
  }

  // Cross-shard: the executors move the money exactly once, in either mode, and TX
  // shows the home shard's row.
  const std::string from = S(AccountsOn("shard-0", 1)[0]);
  const std::string to = S(AccountsOn("shard-1", 1)[0]);
  EXPECT_EQ(a.Call({"TRANSFER", from, to, "10", "USD", "cross-1"}), "+OK");
  EXPECT_EQ(a.Call({"TRANSFER", from, to, "10", "USD", "cross-2", "MODE", "saga"}), "+OK");
  EXPECT_EQ(b.Call({"TRANSFER", from, to, "10", "USD", "cross-1"}), "+OK");  // a repeat: no second move
  EXPECT_EQ(Word(b.Call({"TRANSFER", from, to, "11", "USD", "cross-1"})), "TXID_REUSED");
  EXPECT_EQ(a.Call({"BALANCE", from}), "[:690, :0, USD]");
  EXPECT_TRUE(Eventually([&] { return b.Call({"BALANCE", to}) == "[:730, :0, USD]"; })) << b.Call({"BALANCE", to});
  EXPECT_TRUE(Eventually([&] { return absl::StrContains(b.Call({"TX", "cross-1"}), "row.phase, committed"); }))
      << b.Call({"TX", "cross-1"});
  const std::string row = b.Call({"TX", "cross-2"});
  EXPECT_TRUE(absl::StrContains(row, "kind, saga")) << row;
  EXPECT_TRUE(absl::EndsWith(row, "shard, shard-0]")) << row;
  EXPECT_TRUE(Eventually([&] { return a.Call({"TX.INDOUBT"}) == "[]"; })) << a.Call({"TX.INDOUBT"});
  const std::string transactions = Info(routers[0]->port(), "transactions");
  EXPECT_EQ(InfoNumber(transactions, "tcc_committed"), 1u) << transactions;
  EXPECT_EQ(InfoNumber(transactions, "saga_committed"), 1u) << transactions;
  for (const std::string shard : {"shard-0", "shard-1"}) {
    EXPECT_TRUE(absl::StrContains(CallOnce(ShardPort(shard), {"AUDIT"}), "conserved, :1"));
  }
  // An operator's resolution of a finished transaction: its outcome, or a refusal
  // when asked for the other direction (never "+OK" for a cancel that did not happen).
  EXPECT_EQ(a.Call({"TX.RESOLVE", "cross-1", "confirm"}), "+OK");
  EXPECT_EQ(Word(a.Call({"TX.RESOLVE", "cross-2", "cancel"})), "DECISION_FIXED");
  EXPECT_EQ(Word(a.Call({"TX.RESOLVE", "never-was", "cancel"})), "NO_ROW");
  EXPECT_EQ(Word(a.Call({"TX.RESOLVE", "cross-1", "undo"})), "MALFORMED");

  const std::string info = Info(routers[1]->port());
  EXPECT_EQ(InfoField(info, "map_version"), "0") << info;
  EXPECT_EQ(InfoField(info, "live_shards"), "3") << info;
  EXPECT_EQ(InfoField(info, "zookeeper_state"), "connected") << info;
  EXPECT_EQ(InfoField(info, "router_node_registered"), "1") << info;
  EXPECT_EQ(Registered("/wallet/c/routers/router-b"), absl::StrCat("127.0.0.1:", routers[1]->port()));

  // --http_port starts the HTTP API on the same router core (docs/api.md, HTTP).
  absl::StatusOr<std::string> http_port = ReadFile(dir_->File("router-b.http"));
  ASSERT_TRUE(http_port.ok()) << http_port.status();
  uint32_t port = 0;
  ASSERT_TRUE(absl::SimpleAtoi(absl::StripAsciiWhitespace(*http_port), &port)) << *http_port;
  const std::string health = HttpGet(static_cast<uint16_t>(port), "/healthz");
  EXPECT_TRUE(absl::StartsWith(health, "HTTP/1.1 200")) << health;
}

// Malformed calls get the shard's own answer, without a shard round trip.
TEST_F(RouterClusterTest, MalformedCallsAreRefusedLikeTheShardRefusesThemWithoutReachingAShard) {
  ASSERT_NO_FATAL_FAILURE(StartAllShards());
  ServerProcess* router = StartRouter("router-a");
  ASSERT_NE(router, nullptr);
  Client client(router->port());
  const std::string x = S(AccountsOn("shard-0", 1)[0]);
  const std::string long_txid(65, 't');
  // Arguments both the router and a shard take: the same reply, word for word.
  const std::vector<Args> same = {
      {"FOO", "1"},
      {"OPEN", x},
      {"OPEN", "-1", "USD"},
      {"OPEN", x, "usd"},
      {"DEPOSIT", "007", "10", "t-1"},
      {"DEPOSIT", x, "0", "t-1"},
      {"DEPOSIT", x, "1.5", "t-1"},
      {"DEPOSIT", x, "9223372036854775808", "t-1"},
      {"WITHDRAW", x, "10", long_txid},
      {"WITHDRAW", x, "10", "has space"},
      {"TRANSFER", x, "18446744073709551616", "10", "USD", "t-1"},
      {"TRANSFER", x, x, "10", "USD", "t-1"},
      {"TRANSFER", x, "2", "10", "EURO", "t-1"},
      {"BALANCE", "+5"},
      {"BALANCE"},
      {"TX"},
  };
  const uint64_t sent_before = InfoNumber(Info(router->port(), "shards"), "shard_commands_sent");
  for (const Args& args : same) {
    const std::string reply = client.Call(args);
    EXPECT_TRUE(absl::StartsWith(reply, "-")) << args[0] << ": " << reply;
    EXPECT_EQ(reply, CallOnce(ShardPort("shard-0"), args)) << absl::StrJoin(args, " ");
  }
  // The router's own rules: MODE, TRANSFER's two lengths, TX's txid.
  EXPECT_EQ(Word(client.Call({"TRANSFER", x, "2", "10", "USD", "t-1", "MODE", "2pc"})), "MALFORMED");
  EXPECT_EQ(Word(client.Call({"TRANSFER", x, "2", "10", "USD", "t-1", "FAST", "tcc"})), "MALFORMED");
  EXPECT_EQ(Word(client.Call({"TRANSFER", x, "2", "10", "USD", "t-1", "MODE"})), "WRONG_ARITY");
  EXPECT_EQ(Word(client.Call({"TRANSFER", x, "2", "10", "USD"})), "WRONG_ARITY");
  EXPECT_EQ(Word(client.Call({"TX", long_txid})), "MALFORMED");
  EXPECT_EQ(InfoNumber(Info(router->port(), "shards"), "shard_commands_sent"), sent_before);
  EXPECT_EQ(client.Call({"PING"}), "+PONG");  // the connection stays usable
}

// Transfers through both routers at once, some of them cross-shard (TC/C, the
// default): every one is applied, each shard's books balance, and the cluster holds
// exactly what was deposited, with nothing left held or in doubt.
TEST_F(RouterClusterTest, ConcurrentTransfersThroughTwoRoutersConserveMoneyOnEveryShard) {
  ASSERT_NO_FATAL_FAILURE(StartAllShards());
  ServerProcess* routers[2] = {StartRouter("router-a"), StartRouter("router-b")};
  ASSERT_TRUE(routers[0] != nullptr && routers[1] != nullptr);
  std::vector<std::string> accounts;
  std::map<std::string, std::string> owner;  // account -> shard
  for (int s = 0; s < 2; ++s) {
    for (uint64_t account : AccountsOn(cluster::ShardIdFor(s), 3)) {
      accounts.push_back(S(account));
      owner[S(account)] = cluster::ShardIdFor(s);
    }
  }
  Client setup(routers[0]->port());
  for (const std::string& account : accounts) {
    ASSERT_EQ(setup.Call({"OPEN", account, "EUR"}), "+OK");
    ASSERT_EQ(setup.Call({"DEPOSIT", account, "100000", "seed-" + account}), "+OK");
  }
  constexpr int kTransfersPerClient = 300;
  std::atomic<int> cross_applied{0}, applied{0}, unexpected{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      Client client(routers[t]->port());
      for (int i = 0; i < kTransfersPerClient; ++i) {
        const std::string& from = accounts[(i * 7 + t) % accounts.size()];
        const std::string& to = accounts[(i * 5 + t + 1) % accounts.size()];
        if (from == to) continue;
        const std::string txid = absl::StrCat("c", t, "-", i);
        const std::string reply = client.Call({"TRANSFER", from, to, S(1 + i % 97), "EUR", txid});
        const bool cross = owner.at(from) != owner.at(to);
        if (reply == "+OK") {
          ++(cross ? cross_applied : applied);
        } else {
          ++unexpected;
          ADD_FAILURE() << from << " -> " << to << ": " << reply;
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(unexpected.load(), 0);
  EXPECT_GT(applied.load(), 0);
  EXPECT_GT(cross_applied.load(), 0);
  EXPECT_TRUE(Eventually([&] { return setup.Call({"TX.INDOUBT"}) == "[]"; })) << setup.Call({"TX.INDOUBT"});
  int64_t total = 0;
  for (const std::string& account : accounts) {
    const std::string balance = setup.Call({"BALANCE", account});  // [:available, :held, EUR]
    EXPECT_TRUE(absl::StrContains(balance, ", :0, EUR]")) << account << " " << balance;
    total += std::strtoll(balance.c_str() + 2, nullptr, 10);
  }
  EXPECT_EQ(total, 600000);
  for (int s = 0; s < 2; ++s) {
    const std::string audit = CallOnce(ShardPort(cluster::ShardIdFor(s)), {"AUDIT"});
    EXPECT_TRUE(absl::StrContains(audit, "held, 0,")) << audit;
    EXPECT_TRUE(absl::StrContains(audit, "pending_credit, 0,")) << audit;
    EXPECT_TRUE(absl::StrContains(audit, "conserved, :1")) << audit;
  }
  const uint64_t calls = InfoNumber(Info(routers[0]->port(), "stats"), "calls_transfer") +
                         InfoNumber(Info(routers[1]->port(), "stats"), "calls_transfer");
  EXPECT_EQ(calls, static_cast<uint64_t>(applied.load() + cross_applied.load()));
}

// The map moves a partition from shard-0 to shard-1 while a client keeps
// transferring between two accounts of that partition through router-a. The
// routers follow: calls reach shard-1 (UNKNOWN_ACCOUNT until the accounts are opened
// there, INSUFFICIENT_FUNDS until they are funded, then OK); nothing is lost or
// applied twice on either shard.
TEST_F(RouterClusterTest, RoutersFollowAMapChangeWhileAClientTransfers) {
  ASSERT_NO_FATAL_FAILURE(StartAllShards());
  ServerProcess* router_a = StartRouter("router-a");
  ServerProcess* router_b = StartRouter("router-b");
  ASSERT_TRUE(router_a != nullptr && router_b != nullptr);
  const uint64_t first = AccountsOn("shard-0", 1)[0];
  const uint32_t partition = PartitionOf(first, kPartitions);
  std::vector<std::string> pair = {S(first)};
  for (uint64_t account = first + 1; pair.size() < 2; ++account) {
    if (PartitionOf(account, kPartitions) == partition) pair.push_back(S(account));
  }
  Client setup(router_b->port());
  for (const std::string& account : pair) {
    ASSERT_EQ(setup.Call({"OPEN", account, "USD"}), "+OK");
    ASSERT_EQ(setup.Call({"DEPOSIT", account, "1000", "seed-0-" + account}), "+OK");
  }

  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, unknown_account{0}, moved{0}, other{0};
  std::string other_example;
  std::thread client_thread([&] {
    Client client(router_a->port());
    for (int i = 0; !stop.load(); ++i) {
      const std::string reply = client.Call(
          {"TRANSFER", pair[i % 2], pair[(i + 1) % 2], "1", "USD", absl::StrCat("move-", i)});
      const std::string word = Word(reply);
      if (word == "OK") {
        ++ok;
      } else if (word == "UNKNOWN_ACCOUNT") {
        ++unknown_account;
      } else if (word == "INSUFFICIENT_FUNDS") {
        // Opened on shard-1 and not yet funded: refused, nothing done.
      } else if (word == "MOVED") {
        ++moved;  // every retry met a shard that had not yet seen the map: nothing done
      } else {
        if (other.fetch_add(1) == 0) other_example = reply;
      }
    }
  });
  ASSERT_TRUE(Eventually([&] { return ok.load() >= 20; }));
  absl::StatusOr<cluster::AssignResult> assigned =
      cluster::AssignPartitions(*admin_, "c", S(partition), "shard-1", cluster::kAnyVersion);
  ASSERT_TRUE(assigned.ok()) << assigned.status();
  // Both routers reach shard-1 for the partition, which has no such account yet.
  EXPECT_TRUE(Eventually([&] { return unknown_account.load() > 0; }));
  EXPECT_TRUE(Eventually([&] { return Word(CallOnce(router_b->port(), {"BALANCE", pair[0]})) == "UNKNOWN_ACCOUNT"; }));
  for (const std::string& account : pair) {
    EXPECT_EQ(setup.Call({"OPEN", account, "USD"}), "+OK");
    EXPECT_EQ(setup.Call({"DEPOSIT", account, "1000", "seed-1-" + account}), "+OK");
  }
  const int ok_before = ok.load();
  EXPECT_TRUE(Eventually([&] { return ok.load() >= ok_before + 20; }));
  stop = true;
  client_thread.join();
  EXPECT_EQ(other.load(), 0) << other_example;
  EXPECT_EQ(InfoField(Info(router_a->port()), "map_version"), "1");
  // Each shard holds exactly the 2000 deposited there, whatever ran where.
  for (const std::string shard : {"shard-0", "shard-1"}) {
    const std::string audit = CallOnce(ShardPort(shard), {"AUDIT"});
    EXPECT_TRUE(absl::StrContains(audit, "available, 2000,")) << shard << ": " << audit;
    EXPECT_TRUE(absl::StrContains(audit, "conserved, :1")) << shard << ": " << audit;
  }
}

// A router whose map is stale sends to the old owner, gets MOVED, and retries at the
// owner the reply names. To make the map stale for sure: the router is frozen while
// the map changes, and ZooKeeper is frozen before the router is thawed (so its
// re-read cannot finish) with the request already waiting in its socket.
TEST_F(RouterClusterTest, StaleMapIsCorrectedByRetryingWhereMovedPoints) {
  ASSERT_NO_FATAL_FAILURE(StartAllShards());
  ServerProcess* router = StartRouter("router-a");
  ASSERT_NE(router, nullptr);
  const uint64_t account = AccountsOn("shard-0", 1)[0];
  const std::string partition = S(PartitionOf(account, kPartitions));
  Client client(router->port());
  ASSERT_EQ(client.Call({"PING"}), "+PONG");

  ASSERT_TRUE(router->process().Freeze().ok());
  absl::StatusOr<cluster::AssignResult> assigned =
      cluster::AssignPartitions(*admin_, "c", partition, "shard-1", cluster::kAnyVersion);
  ASSERT_TRUE(assigned.ok()) << assigned.status();
  ASSERT_TRUE(Eventually([&] { return CallOnce(ShardPort("shard-1"), {"OPEN", S(account), "USD"}) == "+OK"; }));
  ASSERT_TRUE(Eventually([&] {
    return absl::StartsWith(CallOnce(ShardPort("shard-0"), {"BALANCE", S(account)}),
                            "-MOVED " + partition + " shard-1 ");
  }));
  ASSERT_TRUE(zookeeper_->Freeze().ok());
  ASSERT_EQ(client.Send({"BALANCE", S(account)}), "");
  ASSERT_TRUE(router->process().Thaw().ok());
  EXPECT_EQ(client.Receive(), "[:0, :0, USD]");
  const std::string info = client.Call({"INFO"});
  EXPECT_GE(InfoNumber(info, "moved_retries"), 1u) << info;
  EXPECT_EQ(InfoField(info, "map_version"), "0") << info;  // still stale: ZooKeeper is frozen
  ASSERT_TRUE(zookeeper_->Thaw().ok());
  EXPECT_TRUE(Eventually([&] { return InfoField(client.Call({"INFO", "router"}), "map_version") == "1"; }));
  EXPECT_EQ(client.Call({"BALANCE", S(account)}), "[:0, :0, USD]");
}

// A router killed with SIGKILL leaves its node until its session times out; one
// restarted with the same id waits for that, takes the id over and serves. A router
// stopped with SIGTERM exits 0 and its node goes at once.
TEST_F(RouterClusterTest, RouterKilledAndRestartedServesAgainAndACleanStopLeavesAtOnce) {
  ASSERT_NO_FATAL_FAILURE(StartAllShards());
  ServerProcess* router = StartRouter("router-a");
  ServerProcess* other = StartRouter("router-b");
  ASSERT_TRUE(router != nullptr && other != nullptr);
  const std::string x = S(AccountsOn("shard-2", 1)[0]);
  ASSERT_EQ(CallOnce(router->port(), {"OPEN", x, "USD"}), "+OK");
  ASSERT_EQ(CallOnce(router->port(), {"DEPOSIT", x, "500", "before-kill"}), "+OK");

  ASSERT_TRUE(router->process().Signal(SIGKILL).ok());
  ASSERT_TRUE(router->process().Wait(10s).ok());
  EXPECT_EQ(CallOnce(other->port(), {"BALANCE", x}), "[:500, :0, USD]");  // the other router serves on
  ServerProcess* restarted = StartRouter("router-a");
  ASSERT_NE(restarted, nullptr);
  EXPECT_EQ(Registered("/wallet/c/routers/router-a"), absl::StrCat("127.0.0.1:", restarted->port()));
  EXPECT_EQ(CallOnce(restarted->port(), {"DEPOSIT", x, "500", "before-kill"}), "+OK");  // a replay
  EXPECT_EQ(CallOnce(restarted->port(), {"DEPOSIT", x, "1", "after-restart"}), "+OK");
  EXPECT_EQ(CallOnce(restarted->port(), {"BALANCE", x}), "[:501, :0, USD]");

  ExitStatus stopped = other->Stop();
  EXPECT_TRUE(stopped.success()) << stopped.ToString();
  EXPECT_EQ(Registered("/wallet/c/routers/router-b"), "");
}

// ZooKeeper stops: both routers keep serving every call from their cached map.
// It comes back: the routers follow the next map change (a partition without
// accounts moves to shard-2; an account opened in it lands on shard-2).
TEST_F(RouterClusterTest, RoutersServeWhileZooKeeperIsDownAndFollowTheMapWhenItReturns) {
  ASSERT_NO_FATAL_FAILURE(StartAllShards());
  ServerProcess* routers[2] = {StartRouter("router-a"), StartRouter("router-b")};
  ASSERT_TRUE(routers[0] != nullptr && routers[1] != nullptr);
  const std::vector<uint64_t> accounts = AccountsOn("shard-0", 2);
  const std::string x = S(accounts[0]), y = S(accounts[1]);
  // A partition of shard-0 that holds neither account, and an account in it.
  uint32_t empty = 0;
  while (empty == PartitionOf(accounts[0], kPartitions) || empty == PartitionOf(accounts[1], kPartitions)) ++empty;
  uint64_t newcomer = 1;
  while (PartitionOf(newcomer, kPartitions) != empty) ++newcomer;

  admin_.reset();
  zookeeper_->Stop();
  for (int r = 0; r < 2; ++r) {
    Client client(routers[r]->port());
    const std::string tag = absl::StrCat("-zk-down-", r);
    EXPECT_EQ(client.Call({"OPEN", x, "USD"}), "+OK");
    EXPECT_EQ(client.Call({"OPEN", y, "USD"}), "+OK");
    EXPECT_EQ(client.Call({"DEPOSIT", x, "100", "dep" + tag}), "+OK");
    EXPECT_EQ(client.Call({"TRANSFER", x, y, "40", "USD", "tx" + tag}), "+OK");
    EXPECT_TRUE(absl::StrContains(client.Call({"TX", "tx" + tag}), "kind, local"));
  }
  EXPECT_EQ(CallOnce(routers[1]->port(), {"BALANCE", y}), "[:80, :0, USD]");
  EXPECT_TRUE(Eventually([&] { return InfoField(Info(routers[0]->port()), "zookeeper_state") != "connected"; }));

  ASSERT_TRUE(zookeeper_->Restart().ok());
  ASSERT_NO_FATAL_FAILURE(ConnectAdmin());
  absl::StatusOr<cluster::AssignResult> assigned =
      cluster::AssignPartitions(*admin_, "c", S(empty), "shard-2", cluster::kAnyVersion);
  ASSERT_TRUE(assigned.ok()) << assigned.status();
  for (int r = 0; r < 2; ++r) {
    EXPECT_TRUE(Eventually([&] { return InfoField(Info(routers[r]->port()), "map_version") == "1"; }));
  }
  EXPECT_TRUE(Eventually([&] { return CallOnce(routers[0]->port(), {"OPEN", S(newcomer), "USD"}) == "+OK"; }));
  EXPECT_EQ(CallOnce(ShardPort("shard-2"), {"BALANCE", S(newcomer)}), "[:0, :0, USD]");
  EXPECT_EQ(CallOnce(routers[1]->port(), {"BALANCE", x}), "[:120, :0, USD]");
}

// A shard frozen past its session timeout loses its node; the router answers its
// accounts -UNAVAILABLE (and keeps serving the other shards); thawed, the shard
// registers again and the router routes to it as before.
TEST_F(RouterClusterTest, ShardSessionExpiryMakesItsAccountsUnavailableUntilItReturns) {
  ASSERT_NO_FATAL_FAILURE(StartAllShards());
  ServerProcess* router = StartRouter("router-a");
  ASSERT_NE(router, nullptr);
  const std::string x = S(AccountsOn("shard-1", 1)[0]);
  const std::string z = S(AccountsOn("shard-0", 1)[0]);
  Client client(router->port());
  ASSERT_EQ(client.Call({"OPEN", x, "USD"}), "+OK");
  ASSERT_EQ(client.Call({"OPEN", z, "USD"}), "+OK");

  ServerProcess* shard = shards_.at("shard-1").get();
  const std::string address = absl::StrCat("127.0.0.1:", shard->port());
  ASSERT_TRUE(shard->process().Freeze().ok());
  EXPECT_TRUE(Eventually([&] { return Registered("/wallet/c/shards/shard-1").empty(); }));
  EXPECT_TRUE(Eventually([&] { return InfoField(client.Call({"INFO", "router"}), "live_shards") == "2"; }));
  const std::string unavailable = client.Call({"DEPOSIT", x, "5", "while-frozen"});
  EXPECT_EQ(Word(unavailable), "UNAVAILABLE") << unavailable;
  EXPECT_TRUE(absl::StrContains(unavailable, "retry")) << unavailable;
  EXPECT_EQ(client.Call({"DEPOSIT", z, "5", "other-shard"}), "+OK");

  ASSERT_TRUE(shard->process().Thaw().ok());
  EXPECT_TRUE(Eventually([&] { return Registered("/wallet/c/shards/shard-1") == address; }));
  EXPECT_TRUE(Eventually([&] { return client.Call({"DEPOSIT", x, "5", "while-frozen"}) == "+OK"; }));
  EXPECT_EQ(client.Call({"BALANCE", x}), "[:5, :0, USD]");  // applied once, retries included
  EXPECT_EQ(InfoField(client.Call({"INFO", "router"}), "live_shards"), "3");
}

// Clients authenticate to the router; the router authenticates to the shards.
TEST_F(RouterClusterTest, ClientsAuthenticateToTheRouterAndTheRouterToTheShards) {
  ASSERT_TRUE(dir_->WriteFile("shard-secret", "shard-pass\n", 0600).ok());
  ASSERT_TRUE(dir_->WriteFile("client-secret", "client-pass\r\n", 0600).ok());
  ASSERT_NO_FATAL_FAILURE(StartAllShards({"--password_file=" + dir_->File("shard-secret")}));
  // INFO needs AUTH too, so these routers are not waited for by StartRouter.
  ServerProcess* router = StartRouter("router-a",
                                      {"--password_file=" + dir_->File("client-secret"),
                                       "--shard_password_file=" + dir_->File("shard-secret")},
                                      /*wait_for_shards=*/false);
  ServerProcess* no_shard_password =
      StartRouter("router-b", {"--password=client-pass"}, /*wait_for_shards=*/false);
  ASSERT_TRUE(router != nullptr && no_shard_password != nullptr);
  const std::string x = S(AccountsOn("shard-0", 1)[0]);

  Client client(router->port());
  EXPECT_EQ(Word(client.Call({"OPEN", x, "USD"})), "NOAUTH");
  EXPECT_EQ(Word(client.Call({"INFO"})), "NOAUTH");
  EXPECT_EQ(Word(client.Call({"PING"})), "NOAUTH");
  EXPECT_EQ(Word(client.Call({"AUTH", "wrong"})), "WRONGPASS");
  EXPECT_EQ(Word(client.Call({"AUTH", "admin", "client-pass"})), "WRONGPASS");
  EXPECT_EQ(client.Call({"AUTH", "default", "client-pass"}), "+OK");
  EXPECT_TRUE(Eventually([&] { return InfoField(client.Call({"INFO", "router"}), "live_shards") == "3"; }));
  EXPECT_EQ(client.Call({"OPEN", x, "USD"}), "+OK");
  EXPECT_EQ(client.Call({"BALANCE", x}), "[:0, :0, USD]");
  EXPECT_EQ(client.Call({"QUIT"}), "+OK");

  Client refused(no_shard_password->port());
  EXPECT_EQ(refused.Call({"AUTH", "client-pass"}), "+OK");
  EXPECT_TRUE(Eventually([&] { return InfoField(refused.Call({"INFO", "router"}), "live_shards") == "3"; }));
  const std::string reply = refused.Call({"BALANCE", x});
  EXPECT_EQ(Word(reply), "UNAVAILABLE") << reply;
  EXPECT_TRUE(absl::StrContains(reply, "requires AUTH")) << reply;
}

// TRANSFER.BATCH through `port` on a new connection: each item's reply ("+OK",
// "-CODE message"), or, when the reply is not an array, that reply alone.
std::vector<std::string> TransferBatch(uint16_t port, const Args& head, const std::vector<Args>& items) {
  Args args = head;
  args.push_back(absl::StrCat(items.size()));
  for (const Args& item : items) args.insert(args.end(), item.begin(), item.end());
  std::vector<const char*> pointers;
  std::vector<size_t> lengths;
  for (const std::string& arg : args) {
    pointers.push_back(arg.data());
    lengths.push_back(arg.size());
  }
  struct timeval timeout = {20, 0};
  redisContext* context = redisConnectWithTimeout("127.0.0.1", port, timeout);
  if (context == nullptr || context->err) {
    if (context != nullptr) redisFree(context);
    return {"!connect failed"};
  }
  redisSetTimeout(context, timeout);
  auto* reply = static_cast<redisReply*>(
      redisCommandArgv(context, static_cast<int>(args.size()), pointers.data(), lengths.data()));
  std::vector<std::string> out;
  auto text = [](const redisReply* one) {
    switch (one->type) {
      case REDIS_REPLY_STATUS:
        return absl::StrCat("+", std::string(one->str, one->len));
      case REDIS_REPLY_ERROR:
        return absl::StrCat("-", std::string(one->str, one->len));
      default:
        return absl::StrCat("?type ", one->type);
    }
  };
  if (reply == nullptr) {
    out.push_back(absl::StrCat("!lost: ", context->errstr));
  } else if (reply->type == REDIS_REPLY_ARRAY) {
    for (size_t i = 0; i < reply->elements; ++i) out.push_back(text(reply->element[i]));
  } else {
    out.push_back(text(reply));
  }
  if (reply != nullptr) freeReplyObject(reply);
  redisFree(context);
  return out;
}

// A batch through the router: same-shard items on two shards (one TRANSFER.BATCH
// each), cross-shard items through the executors (TC/C by default, saga with MODE),
// bad items answered in place; the balances and each shard's AUDIT agree, and the
// same batch sent again (through the other router) applies nothing twice.
TEST_F(RouterClusterTest, TransferBatchMixesShardsCrossShardAndBadItemsAndAReplayAppliesNothingTwice) {
  ASSERT_NO_FATAL_FAILURE(StartAllShards());
  ServerProcess* routers[2] = {StartRouter("router-a"), StartRouter("router-b")};
  ASSERT_TRUE(routers[0] != nullptr && routers[1] != nullptr);
  const std::vector<uint64_t> on0 = AccountsOn("shard-0", 3), on1 = AccountsOn("shard-1", 2);
  const std::string x0 = S(on0[0]), y0 = S(on0[1]), never0 = S(on0[2]);
  const std::string x1 = S(on1[0]), y1 = S(on1[1]);
  Client setup(routers[0]->port());
  for (const std::string& account : {x0, y0, x1, y1}) {
    ASSERT_EQ(setup.Call({"OPEN", account, "USD"}), "+OK");
    ASSERT_EQ(setup.Call({"DEPOSIT", account, "1000", "seed-" + account}), "+OK");
  }
  const std::vector<std::pair<Args, std::string>> items = {
      {{x0, y0, "100", "USD", "bt-0"}, "OK"},                  // shard-0
      {{x1, y1, "200", "USD", "bt-1"}, "OK"},                  // shard-1
      {{x0, x1, "50", "USD", "bt-2"}, "OK"},                   // cross-shard
      {{y1, y0, "30", "USD", "bt-3"}, "OK"},                   // cross-shard, the other way
      {{x0, y0, "abc", "USD", "bt-4"}, "MALFORMED"},           // never sent
      {{x1, x1, "5", "USD", "bt-5"}, "SAME_ACCOUNT"},          // never sent
      {{y0, x0, "5000", "USD", "bt-6"}, "INSUFFICIENT_FUNDS"}, // shard-0 refuses it
      {{x0, y0, "100", "USD", "bt-0"}, "OK"},                  // bt-0 again: a replay
      {{x0, y0, "999", "USD", "bt-0"}, "TXID_REUSED"},
      {{never0, x0, "1", "USD", "bt-9"}, "UNKNOWN_ACCOUNT"},
      {{y1, x1, "1", "EUR", "bt-10"}, "CURRENCY_MISMATCH"},
  };
  std::vector<Args> batch;
  for (const auto& item : items) batch.push_back(item.first);
  auto check = [&](const std::vector<std::string>& replies, const std::string& what) {
    ASSERT_EQ(replies.size(), items.size()) << what << ": " << absl::StrJoin(replies, " | ");
    for (size_t i = 0; i < items.size(); ++i) {
      EXPECT_EQ(Word(replies[i]), items[i].second) << what << " item " << i << ": " << replies[i];
    }
  };
  const std::vector<std::string> first = TransferBatch(routers[0]->port(), {"TRANSFER.BATCH"}, batch);
  check(first, "first");
  // An item's error is the single TRANSFER's, word for word.
  EXPECT_EQ(first[4], setup.Call({"TRANSFER", x0, y0, "abc", "USD", "bt-4"}));

  const std::map<std::string, std::string> expected = {
      {x0, "[:850, :0, USD]"}, {y0, "[:1130, :0, USD]"}, {x1, "[:850, :0, USD]"}, {y1, "[:1170, :0, USD]"}};
  auto balances_are = [&] {
    for (const auto& [account, balance] : expected) {
      if (setup.Call({"BALANCE", account}) != balance) return false;
    }
    return true;
  };
  EXPECT_TRUE(Eventually(balances_are)) << setup.Call({"BALANCE", x1}) << " " << setup.Call({"BALANCE", y0});
  EXPECT_TRUE(Eventually([&] { return setup.Call({"TX.INDOUBT"}) == "[]"; })) << setup.Call({"TX.INDOUBT"});
  const std::string info = Info(routers[0]->port(), "stats");
  EXPECT_EQ(InfoNumber(info, "calls_transfer.batch"), 1u) << info;
  EXPECT_EQ(InfoNumber(info, "calls_transfer"), 1u) << info;  // the comparison above; items are not calls
  EXPECT_TRUE(absl::StrContains(setup.Call({"TX", "bt-2"}), "kind, tcc")) << setup.Call({"TX", "bt-2"});

  // The same batch again, through the other router: the same answers, nothing moves.
  std::map<std::string, std::string> audits;
  for (const std::string shard : {"shard-0", "shard-1"}) audits[shard] = CallOnce(ShardPort(shard), {"AUDIT"});
  check(TransferBatch(routers[1]->port(), {"TRANSFER.BATCH"}, batch), "replay");
  EXPECT_TRUE(balances_are());
  for (const std::string shard : {"shard-0", "shard-1"}) {
    const std::string audit = CallOnce(ShardPort(shard), {"AUDIT"});
    EXPECT_EQ(audit, audits[shard]) << shard;
    EXPECT_TRUE(absl::StrContains(audit, "held, 0,")) << audit;
    EXPECT_TRUE(absl::StrContains(audit, "conserved, :1")) << audit;
  }

  // MODE saga applies to the cross-shard items; the same-shard ones are one shard command as ever.
  const std::vector<std::string> saga = TransferBatch(
      routers[1]->port(), {"TRANSFER.BATCH", "MODE", "saga"},
      {{y0, x1, "10", "USD", "bs-0"}, {x1, y1, "10", "USD", "bs-1"}, {x0, y0, "x", "USD", "bs-2"}});
  ASSERT_EQ(saga.size(), 3u) << absl::StrJoin(saga, " | ");
  EXPECT_EQ(saga[0], "+OK");
  EXPECT_EQ(saga[1], "+OK");
  EXPECT_EQ(Word(saga[2]), "MALFORMED");
  EXPECT_TRUE(absl::StrContains(setup.Call({"TX", "bs-0"}), "kind, saga")) << setup.Call({"TX", "bs-0"});
  EXPECT_TRUE(Eventually([&] { return setup.Call({"BALANCE", x1}) == "[:850, :0, USD]"; }))
      << setup.Call({"BALANCE", x1});
  EXPECT_EQ(setup.Call({"BALANCE", y0}), "[:1120, :0, USD]");
  EXPECT_EQ(setup.Call({"BALANCE", y1}), "[:1180, :0, USD]");

  // A bad header refuses the whole call: one error, nothing done.
  EXPECT_EQ(TransferBatch(routers[0]->port(), {"TRANSFER.BATCH"}, {}),
            (std::vector<std::string>{"-WRONG_ARITY wrong number of arguments for 'TRANSFER.BATCH'; usage: "
                                      "TRANSFER.BATCH [MODE tcc|saga] n from to amount currency txid [from to "
                                      "amount currency txid ...]"}));
  EXPECT_EQ(Word(TransferBatch(routers[0]->port(), {"TRANSFER.BATCH", "MODE", "2pc"}, {{x0, y0, "1", "USD", "h"}})
                     .at(0)),
            "MALFORMED");
  EXPECT_EQ(setup.Call({"TX", "h"}), "(nil)");
}

}  // namespace
}  // namespace wallet::test
