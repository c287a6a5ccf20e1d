// router_core_test.cc — RouterCore on a real EventLoop and ShardPool, in front of
// fake shards: small RESP servers on the same loop whose replies each test scripts
// (MOVED here, nil there, no reply at all). Checks what the core adds: argument
// checks with no round trip, routing, cross-shard refusal, MOVED retries and their
// bound, TX fan-out, overload, failure advice and the pool's sticky owners.
//
// Nothing asserts on timing: the loop runs until the awaited reply is in, and the
// deadline only bounds how long a broken core can hang a test.
#include "router/router_core.h"

#include <sys/socket.h>
#include <unistd.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "common/net.h"
#include "common/partition.h"
#include "common/resp.h"
#include "common/strings.h"
#include "gtest/gtest.h"

namespace wallet::router {
namespace {

using shardlink::ShardReply;
using Args = std::vector<std::string>;

constexpr int64_t kHangLimitMs = 20'000;  // bounds a hang, never a success
constexpr uint32_t kPartitions = 16;      // shard-a owns 0-7, shard-b 8-15

// A RESP server on the loop that records each command and answers with what
// `handler` returns: raw RESP bytes, nullopt for no answer at all, or kHangUp to
// close the connection.
class FakeShard {
 public:
  using Handler = std::function<std::optional<std::string>(const Args& command)>;
  static constexpr char kHangUp[] = "<hang up>";

  FakeShard(EventLoop& loop, Handler handler) : loop_(loop), handler_(std::move(handler)) {
    absl::StatusOr<ListeningSocket> listening = ListenTcp("127.0.0.1", 0);
    EXPECT_TRUE(listening.ok()) << listening.status();
    listen_fd_ = listening->fd;
    port_ = listening->port;
    listen_watch_ = *loop_.WatchFd(listen_fd_, FdInterest::kRead, [this](FdReadiness) { Accept(); });
  }
  ~FakeShard() {
    for (auto& [fd, client] : clients_) {
      loop_.UnwatchFd(client.watch);
      close(fd);
    }
    loop_.UnwatchFd(listen_watch_);
    close(listen_fd_);
  }

  std::string address() const { return StrCat("127.0.0.1:", port_); }
  const std::vector<Args>& commands() const { return commands_; }

 private:
  struct Client {
    EventLoop::WatchId watch = 0;
    std::string buffer;
    resp::RequestParser parser{resp::Limits{}};
  };

  void Accept() {
    int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    clients_[fd].watch = *loop_.WatchFd(fd, FdInterest::kRead, [this, fd](FdReadiness) { Read(fd); });
  }

  void Read(int fd) {
    Client& client = clients_[fd];
    char chunk[4096];
    ssize_t n = read(fd, chunk, sizeof(chunk));
    if (n <= 0) {
      HangUp(fd);
      return;
    }
    client.buffer.append(chunk, static_cast<size_t>(n));
    size_t consumed = 0;
    std::vector<std::string_view> args;
    while (client.parser.Next(client.buffer, &consumed, &args) == resp::RequestParser::Status::kCommand) {
      Args command(args.begin(), args.end());
      commands_.push_back(command);
      std::optional<std::string> reply = handler_(command);
      if (!reply.has_value()) continue;
      if (*reply == kHangUp) {
        HangUp(fd);
        return;
      }
      ASSERT_EQ(write(fd, reply->data(), reply->size()), static_cast<ssize_t>(reply->size()));
    }
    client.buffer.erase(0, consumed);
  }

  void HangUp(int fd) {
    loop_.UnwatchFd(clients_[fd].watch);
    close(fd);
    clients_.erase(fd);
  }

  EventLoop& loop_;
  Handler handler_;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  EventLoop::WatchId listen_watch_ = 0;
  std::map<int, Client> clients_;
  std::vector<Args> commands_;
};

FakeShard::Handler Always(std::string reply) {
  return [reply](const Args&) { return std::optional<std::string>(reply); };
}

// An account whose partition is in [first, last].
uint64_t AccountIn(uint32_t first, uint32_t last, uint64_t start = 1) {
  for (uint64_t account = start;; ++account) {
    const uint32_t partition = PartitionOf(account, kPartitions);
    if (partition >= first && partition <= last) return account;
  }
}

std::shared_ptr<const cluster::VersionedPartitionMap> EvenMap(int32_t version) {
  auto map = std::make_shared<cluster::VersionedPartitionMap>();
  map->map = *cluster::PartitionMap::Even(kPartitions, {"shard-a", "shard-b"});
  map->version = version;
  map->created_zxid = 1;
  return map;
}

class RouterCoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    loop_ = *EventLoop::Create();
    shardlink::ShardPoolOptions pool_options;
    pool_options.connections_per_shard = 1;
    pool_options.connection.backoff_initial_ms = 5;
    pool_options.connection.backoff_max_ms = 20;
    pool_ = *shardlink::ShardPool::Create(*loop_, pool_options);
  }
  void TearDown() override {
    pool_.reset();  // fails what is in flight: its callbacks reach the core
    core_.reset();
    shards_.clear();
    loop_.reset();
  }

  // Starts the core with two fake shards behind map version 0.
  void Start(FakeShard::Handler a, FakeShard::Handler b, RouterCoreOptions options = {}) {
    options.router_id = "router-test";
    core_ = std::make_unique<RouterCore>(*loop_, *pool_, options);
    core_->SetMapRefresher([this] { ++refreshes_; });
    shards_["shard-a"] = std::make_unique<FakeShard>(*loop_, std::move(a));
    shards_["shard-b"] = std::make_unique<FakeShard>(*loop_, std::move(b));
    core_->SetLiveShards({{"shard-a", shards_["shard-a"]->address()}, {"shard-b", shards_["shard-b"]->address()}});
    core_->SetPartitionMap(EvenMap(0));
  }

  // Runs one call to its end; the reply as text.
  std::string Run(const Args& args) {
    std::optional<ShardReply> reply;
    core_->Execute(args, [&](ShardReply value) { reply = std::move(value); });
    EXPECT_TRUE(loop_->RunUntil([&] { return reply.has_value(); }, kHangLimitMs).ok()) << "no reply";
    return reply.has_value() ? reply->ToString() : "(none)";
  }

  // The reply if the call is answered inside Execute, else "(later)".
  std::string RunAtOnce(const Args& args) {
    // Shared with the callback, which may run after this returns (at TearDown).
    auto reply = std::make_shared<std::optional<ShardReply>>();
    core_->Execute(args, [reply](ShardReply value) { *reply = std::move(value); });
    return reply->has_value() ? (*reply)->ToString() : "(later)";
  }

  size_t Sent() const {
    size_t count = 0;
    for (const auto& [id, shard] : shards_) count += shard->commands().size();
    return count;
  }

  std::unique_ptr<EventLoop> loop_;
  std::unique_ptr<shardlink::ShardPool> pool_;
  std::unique_ptr<RouterCore> core_;
  std::map<std::string, std::unique_ptr<FakeShard>> shards_;
  int refreshes_ = 0;
};

TEST_F(RouterCoreTest, MalformedCallsAreAnsweredAtOnceWithoutAShard) {
  Start(Always("+OK\r\n"), Always("+OK\r\n"));
  const std::string a = StrCat(AccountIn(0, 7));
  const std::string b = StrCat(AccountIn(0, 7, AccountIn(0, 7) + 1));
  const struct {
    Args args;
    std::string reply;
  } kCases[] = {
      {{"NOPE"}, "-UNKNOWN_COMMAND unknown command 'NOPE'"},
      {{"OPEN", a}, "-WRONG_ARITY wrong number of arguments for 'OPEN'; usage: OPEN account currency"},
      {{"open", "x", "USD"}, "-MALFORMED account must be an unsigned 64-bit decimal integer, got 'x'"},
      {{"OPEN", a, "US"}, "-MALFORMED currency must be three letters A-Z, got 'US'"},
      {{"DEPOSIT", a, "-5", "t"}, "-MALFORMED amount must be a positive integer of minor units up to "
                                  "9223372036854775807, got '-5'"},
      {{"WITHDRAW", a, "5", ""}, "-MALFORMED transaction id must be 1-64 visible ASCII characters"},
      {{"TRANSFER", a, b, "5", "USD"},
       "-WRONG_ARITY wrong number of arguments for 'TRANSFER'; usage: TRANSFER from to amount currency txid "
       "[MODE tcc|saga]"},
      {{"TRANSFER", a, b, "5", "USD", "t", "MODE"},
       "-WRONG_ARITY wrong number of arguments for 'TRANSFER'; usage: TRANSFER from to amount currency txid "
       "[MODE tcc|saga]"},
      {{"TRANSFER", a, b, "5", "USD", "t", "MODE", "xa"}, "-MALFORMED mode must be tcc or saga, got 'xa'"},
      {{"TRANSFER", a, b, "5", "USD", "t", "WITH", "tcc"},
       "-MALFORMED expected nothing or MODE tcc|saga after the txid"},
      {{"TRANSFER", a, a, "5", "USD", "t"}, "-SAME_ACCOUNT a transfer needs two different accounts"},
      {{"BALANCE", "00"}, "-MALFORMED account must be an unsigned 64-bit decimal integer, got '00'"},
      {{"TX", std::string(65, 'x')}, "-MALFORMED transaction id must be 1-64 visible ASCII characters"},
      {{"PING"}, "+PONG"},
      {{"ping", "hi"}, "\"hi\""},
  };
  for (const auto& test : kCases) EXPECT_EQ(RunAtOnce(test.args), test.reply) << test.args[0];
  EXPECT_EQ(Sent(), 0u);
  const RouterStats stats = core_->stats();
  EXPECT_EQ(stats.calls, std::size(kCases));
  EXPECT_EQ(stats.errors_by_code[static_cast<size_t>(ResultCode::kMalformed)], 8u);
  EXPECT_EQ(stats.calls_by_command[static_cast<size_t>(RouterCommand::kOther)], 1u);
  EXPECT_EQ(stats.in_flight_now, 0u);
}

TEST_F(RouterCoreTest, SameShardTransferIsOneShardTransferWithoutTheMode) {
  Start(Always("+OK\r\n"), Always("+OK\r\n"));
  const std::string from = StrCat(AccountIn(8, 15));
  const std::string to = StrCat(AccountIn(8, 15, AccountIn(8, 15) + 1));
  EXPECT_EQ(Run({"transfer", from, to, "250", "EUR", "tx-1", "mode", "saga"}), "+OK");
  ASSERT_EQ(shards_["shard-b"]->commands().size(), 1u);
  EXPECT_EQ(shards_["shard-b"]->commands()[0], (Args{"TRANSFER", from, to, "250", "EUR", "tx-1"}));
  EXPECT_TRUE(shards_["shard-a"]->commands().empty());
}

// The executors' messages in order, against shards that accept everything (the
// protocol's faults are tests/xshard_fault_test.cc's, against real shards).
TEST_F(RouterCoreTest, CrossShardTransferRunsTheTccMessagesInOrder) {
  Start(Always("+OK\r\n"), Always("+OK\r\n"));
  const std::string from = StrCat(AccountIn(0, 7)), to = StrCat(AccountIn(8, 15));
  EXPECT_EQ(Run({"TRANSFER", from, to, "25", "USD", "x"}), "+OK");
  ASSERT_TRUE(loop_->RunUntil([&] { return core_->executor().active() == 0; }, 5000).ok());
  const auto& home = shards_["shard-a"]->commands();
  const auto& other = shards_["shard-b"]->commands();
  ASSERT_EQ(home.size(), 3u);
  ASSERT_EQ(other.size(), 2u);
  EXPECT_EQ(home[0], (Args{"TCC.TRY", "x", "DEBIT", from, "25", "USD", "ROW", to}));
  EXPECT_EQ(other[0], (Args{"TCC.TRY", "x", "CREDIT", to, "25", "USD"}));
  EXPECT_EQ(home[1], (Args{"TCC.CONFIRM", "x", "DEBIT", "ROW", "decision", "confirm", "phase", "confirming",
                           "credit_try", "ok", "credit_answer", "OK"}));
  EXPECT_EQ(other[1], (Args{"TCC.CONFIRM", "x", "CREDIT"}));
  EXPECT_EQ(home[2], (Args{"ROW.SET", "x", "credit_end", "done", "phase", "committed"}));
  EXPECT_EQ(core_->stats().transactions.committed[0], 1u);
  EXPECT_EQ(core_->stats().transactions.finished_committed[0], 1u);
}

TEST_F(RouterCoreTest, CrossShardSagaRefusedByTheTargetIsCompensated) {
  Start(Always("+OK\r\n"), [](const Args& args) -> std::optional<std::string> {
    if (args[0] == "SAGA.STEP") return std::string("-UNKNOWN_ACCOUNT account was never opened here\r\n");
    return std::string("+EMPTY\r\n");
  });
  const std::string from = StrCat(AccountIn(0, 7)), to = StrCat(AccountIn(8, 15));
  const std::string reply = Run({"TRANSFER", from, to, "25", "USD", "s", "MODE", "saga"});
  EXPECT_TRUE(absl::StartsWith(ToAbsl(reply), "-UNKNOWN_ACCOUNT ")) << reply;
  ASSERT_TRUE(loop_->RunUntil([&] { return core_->executor().active() == 0; }, 5000).ok());
  const auto& home = shards_["shard-a"]->commands();
  const auto& other = shards_["shard-b"]->commands();
  ASSERT_EQ(home.size(), 3u);
  ASSERT_EQ(other.size(), 2u);
  EXPECT_EQ(home[0], (Args{"SAGA.STEP", "s", "1", "DEBIT", from, "25", "USD", "ROW", to}));
  EXPECT_EQ(other[0], (Args{"SAGA.STEP", "s", "2", "CREDIT", to, "25", "USD"}));
  EXPECT_EQ(home[1], (Args{"SAGA.COMPENSATE", "s", "1", "ROW", "decision", "cancel", "phase", "cancelling",
                           "credit_try", "failed", "credit_answer", "UNKNOWN_ACCOUNT"}));
  EXPECT_EQ(other[1], (Args{"SAGA.COMPENSATE", "s", "2"}));
  EXPECT_EQ(home[2], (Args{"ROW.SET", "s", "credit_end", "done", "phase", "aborted"}));
  EXPECT_EQ(core_->stats().transactions.rejected[1], 1u);
}

TEST_F(RouterCoreTest, MovedIsRetriedAtTheOwnerItNames) {
  const uint64_t account = AccountIn(0, 7);
  const std::string moved = StrCat("-MOVED ", PartitionOf(account, kPartitions), " shard-b partition moved\r\n");
  Start(Always(moved), Always("*3\r\n:5\r\n:0\r\n$3\r\nUSD\r\n"));
  EXPECT_EQ(Run({"BALANCE", StrCat(account)}), "[:5, :0, \"USD\"]");
  EXPECT_EQ(shards_["shard-a"]->commands().size(), 1u);
  EXPECT_EQ(shards_["shard-b"]->commands().size(), 1u);
  EXPECT_EQ(core_->stats().moved_retries, 1u);
  EXPECT_EQ(core_->stats().map_refreshes, 1u);
  EXPECT_EQ(refreshes_, 1);
}

TEST_F(RouterCoreTest, MovedRetriesAreBoundedAndThenTheClientGetsMoved) {
  const uint64_t account = AccountIn(0, 7);
  const std::string partition = StrCat(PartitionOf(account, kPartitions));
  RouterCoreOptions options;
  options.max_moved_retries = 3;
  options.moved_retry_wait_ms = 1;
  // Each shard says the other one owns it.
  Start(Always(StrCat("-MOVED ", partition, " shard-b no\r\n")), Always(StrCat("-MOVED ", partition, " shard-a no\r\n")),
        options);
  const std::string reply = Run({"DEPOSIT", StrCat(account), "5", "t-1"});
  EXPECT_TRUE(absl::StartsWith(ToAbsl(reply), "-MOVED ")) << reply;
  EXPECT_EQ(Sent(), 4u);  // the first send and 3 retries
  EXPECT_EQ(core_->stats().moved_retries, 3u);
  EXPECT_EQ(core_->stats().errors_by_code[static_cast<size_t>(ResultCode::kWrongPartition)], 1u);
}

TEST_F(RouterCoreTest, ANewerMapSendsTheCallsWaitingAfterMovedAtOnce) {
  const uint64_t account = AccountIn(0, 7);
  const uint32_t partition = PartitionOf(account, kPartitions);
  RouterCoreOptions options;
  options.moved_retry_wait_ms = 600'000;  // only the new map can wake the call in time
  Start(Always(StrCat("-MOVED ", partition, " unknown gone\r\n")), Always("+OK\r\n"), options);
  std::optional<ShardReply> reply;
  core_->Execute({"OPEN", StrCat(account), "USD"}, [&](ShardReply value) { reply = std::move(value); });
  ASSERT_TRUE(loop_->RunUntil([&] { return shards_["shard-a"]->commands().size() == 1; }, kHangLimitMs).ok());
  ASSERT_TRUE(loop_->RunUntil([&] { return core_->stats().moved_retries == 1; }, kHangLimitMs).ok());
  EXPECT_FALSE(reply.has_value());
  auto map = std::make_shared<cluster::VersionedPartitionMap>(*EvenMap(1));
  PartitionSet moved(kPartitions);
  moved.Add(partition);
  ASSERT_TRUE(map->map.Assign(moved, "shard-b").ok());
  core_->SetPartitionMap(map);
  ASSERT_TRUE(loop_->RunUntil([&] { return reply.has_value(); }, kHangLimitMs).ok());
  EXPECT_EQ(reply->ToString(), "+OK");
  EXPECT_EQ(shards_["shard-b"]->commands().size(), 1u);
  EXPECT_EQ(core_->stats().map_version_now, 1);
}

TEST_F(RouterCoreTest, TxAnswersWithTheShardThatKnowsTheTransaction) {
  Start(Always("$-1\r\n"), Always("*4\r\n$4\r\nkind\r\n$5\r\nlocal\r\n$5\r\nstate\r\n$9\r\ncommitted\r\n"));
  EXPECT_EQ(Run({"TX", "tx-9"}), "[\"kind\", \"local\", \"state\", \"committed\", \"shard\", \"shard-b\"]");
  EXPECT_EQ(shards_["shard-a"]->commands(), (std::vector<Args>{{"TX", "tx-9"}}));
}

TEST_F(RouterCoreTest, TxIsUnknownOnlyWhenEveryShardAnswered) {
  Start(Always("$-1\r\n"), Always("$-1\r\n"));
  EXPECT_EQ(Run({"TX", "tx-9"}), "(nil)");
  // A shard that hangs up: its answer is missing, so "unknown" cannot be said.
  shards_["shard-b"] = std::make_unique<FakeShard>(*loop_, Always(FakeShard::kHangUp));
  core_->SetLiveShards({{"shard-a", shards_["shard-a"]->address()}, {"shard-b", shards_["shard-b"]->address()}});
  const std::string reply = Run({"TX", "tx-9"});
  EXPECT_TRUE(absl::StartsWith(ToAbsl(reply), "-UNAVAILABLE no shard that answered knows transaction tx-9, but 1 "
                                              "did not answer"))
      << reply;
}

TEST_F(RouterCoreTest, CallsBeyondMaxInFlightAreBusyAtOnce) {
  RouterCoreOptions options;
  options.max_in_flight = 2;
  auto never = [](const Args&) { return std::optional<std::string>(); };
  Start(never, never, options);
  const std::string account = StrCat(AccountIn(0, 7));
  EXPECT_EQ(RunAtOnce({"BALANCE", account}), "(later)");
  EXPECT_EQ(RunAtOnce({"BALANCE", account}), "(later)");
  const std::string busy = RunAtOnce({"BALANCE", account});
  EXPECT_TRUE(absl::StartsWith(ToAbsl(busy), "-BUSY router overloaded: 2 calls in flight")) << busy;
  EXPECT_EQ(RunAtOnce({"PING"}), "+PONG");  // answered by the router itself
  EXPECT_EQ(core_->stats().overloads, 1u);
  EXPECT_EQ(core_->in_flight(), 2u);
}

TEST_F(RouterCoreTest, AShardLostMidCallGivesUnavailableWithTheRightAdvice) {
  Start(Always(FakeShard::kHangUp), Always("-NOAUTH authentication required\r\n"));
  const std::string lost = Run({"DEPOSIT", StrCat(AccountIn(0, 7)), "5", "t-1"});
  EXPECT_TRUE(absl::StartsWith(ToAbsl(lost), "-UNAVAILABLE shard-a: ")) << lost;
  EXPECT_TRUE(absl::EndsWith(ToAbsl(lost), "; outcome unknown, retry with the same txid")) << lost;
  EXPECT_EQ(core_->stats().outcome_unknown, 1u);
  const std::string noauth = Run({"BALANCE", StrCat(AccountIn(8, 15))});
  EXPECT_TRUE(absl::StartsWith(ToAbsl(noauth), "-UNAVAILABLE shard-b requires AUTH")) << noauth;
  // An owner with no address at all: nothing is sent.
  auto map = std::make_shared<cluster::VersionedPartitionMap>(*EvenMap(1));
  ASSERT_TRUE(map->map.Assign(PartitionSet::All(kPartitions), "shard-z").ok());
  core_->SetPartitionMap(map);
  const std::string nowhere = RunAtOnce({"WITHDRAW", StrCat(AccountIn(0, 7)), "5", "t-2"});
  EXPECT_TRUE(absl::StrContains(ToAbsl(nowhere), "shard shard-z (owner of partition")) << nowhere;
  EXPECT_TRUE(absl::EndsWith(ToAbsl(nowhere), "nothing was done, retry later")) << nowhere;
}

TEST_F(RouterCoreTest, OwnersThatLeaveTheLiveShardsStayInThePoolOthersGo) {
  Start(Always("+OK\r\n"), Always("+OK\r\n"));
  core_->SetLiveShards({{"shard-a", shards_["shard-a"]->address()},
                        {"shard-b", shards_["shard-b"]->address()},
                        {"shard-c", "127.0.0.1:1"}});
  EXPECT_EQ(core_->pooled_shards().size(), 3u);
  core_->SetLiveShards({{"shard-a", shards_["shard-a"]->address()}});
  EXPECT_EQ(core_->pooled_shards(), (std::map<std::string, std::string>{{"shard-a", shards_["shard-a"]->address()},
                                                                        {"shard-b", shards_["shard-b"]->address()}}));
  EXPECT_EQ(core_->stats().live_shards_now, 1u);
  // The sticky owner is still reached.
  EXPECT_EQ(Run({"OPEN", StrCat(AccountIn(8, 15)), "USD"}), "+OK");
}

// --- TRANSFER.BATCH ---------------------------------------------------------------

// A fake shard's TRANSFER.BATCH: one element per item, `item` (from to amount
// currency txid) giving each one's RESP line; anything else gets `other`.
FakeShard::Handler BatchShard(std::function<std::string(const Args& item)> item, std::string other = "+OK\r\n") {
  return [item, other](const Args& command) -> std::optional<std::string> {
    if (command[0] != "TRANSFER.BATCH") return other;
    const size_t count = std::stoul(command[1]);
    std::string reply = StrCat("*", count, "\r\n");
    for (size_t i = 0; i < count; ++i) {
      reply += item(Args(command.begin() + 2 + 5 * i, command.begin() + 7 + 5 * i));
    }
    return reply;
  };
}

// The TRANSFER.BATCH commands a fake shard got.
std::vector<Args> BatchCommands(const FakeShard& shard) {
  std::vector<Args> batches;
  for (const Args& command : shard.commands()) {
    if (command[0] == "TRANSFER.BATCH") batches.push_back(command);
  }
  return batches;
}

Args BatchCall(const std::vector<Args>& items, const Args& head = {"TRANSFER.BATCH"}) {
  Args call = head;
  call.push_back(StrCat(items.size()));
  for (const Args& item : items) call.insert(call.end(), item.begin(), item.end());
  return call;
}

// Same-shard items reach each owner as ONE TRANSFER.BATCH, in the request's order;
// bad items are answered in place without a shard; a cross-shard item runs through
// the executor; the reply has one result per item in the request's order.
TEST_F(RouterCoreTest, TransferBatchSendsEachShardOneCommandAndAnswersInOrder) {
  auto refuse_poor = [](const Args& item) {
    return item[4] == "poor" ? std::string("-INSUFFICIENT_FUNDS account has 0 available, needs 7\r\n")
                             : std::string("+OK\r\n");
  };
  Start(BatchShard(refuse_poor), BatchShard(refuse_poor));
  const uint64_t a1 = AccountIn(0, 7), a2 = AccountIn(0, 7, a1 + 1);
  const uint64_t b1 = AccountIn(8, 15), b2 = AccountIn(8, 15, b1 + 1);
  const std::vector<Args> items = {
      {StrCat(a1), StrCat(a2), "10", "USD", "t-0"},
      {StrCat(b1), StrCat(b2), "11", "USD", "t-1"},
      {StrCat(a1), StrCat(a2), "x", "USD", "t-2"},      // malformed: never sent
      {StrCat(a2), StrCat(a1), "12", "USD", "t-3"},
      {StrCat(a1), StrCat(b1), "13", "USD", "t-4"},     // cross-shard: the executor
      {StrCat(b2), StrCat(b1), "7", "USD", "poor"},     // the shard refuses it
      {StrCat(b1), StrCat(b1), "14", "USD", "t-6"},     // same account: never sent
      {StrCat(a2), StrCat(a1), "15", "USD", ""},        // bad txid: never sent
  };
  EXPECT_EQ(Run(BatchCall(items)),
            "[+OK, +OK, -MALFORMED amount must be a positive integer of minor units up to 9223372036854775807, got "
            "'x', +OK, +OK, -INSUFFICIENT_FUNDS account has 0 available, needs 7, -SAME_ACCOUNT a transfer needs two "
            "different accounts, -MALFORMED transaction id must be 1-64 visible ASCII characters]");
  ASSERT_EQ(BatchCommands(*shards_["shard-a"]),
            (std::vector<Args>{{"TRANSFER.BATCH", "2", StrCat(a1), StrCat(a2), "10", "USD", "t-0", StrCat(a2),
                                StrCat(a1), "12", "USD", "t-3"}}));
  ASSERT_EQ(BatchCommands(*shards_["shard-b"]),
            (std::vector<Args>{{"TRANSFER.BATCH", "2", StrCat(b1), StrCat(b2), "11", "USD", "t-1", StrCat(b2),
                                StrCat(b1), "7", "USD", "poor"}}));
  // The cross-shard item: TC/C (the default mode), home on shard-a.
  EXPECT_EQ(shards_["shard-a"]->commands()[1][0], "TCC.TRY") << shards_["shard-a"]->commands().size();
  ASSERT_TRUE(loop_->RunUntil([&] { return core_->executor().active() == 0; }, 5000).ok());
  const RouterStats stats = core_->stats();
  EXPECT_EQ(stats.calls, 1u);
  EXPECT_EQ(stats.calls_by_command[static_cast<size_t>(RouterCommand::kTransferBatch)], 1u);
  EXPECT_EQ(stats.calls_by_command[static_cast<size_t>(RouterCommand::kTransfer)], 0u);
  EXPECT_EQ(stats.errors_by_code[static_cast<size_t>(ResultCode::kMalformed)], 2u);
  EXPECT_EQ(stats.errors_by_code[static_cast<size_t>(ResultCode::kSameAccount)], 1u);
  EXPECT_EQ(stats.errors_by_code[static_cast<size_t>(ResultCode::kInsufficientFunds)], 1u);
  EXPECT_EQ(stats.transactions.committed[0], 1u);
  EXPECT_EQ(stats.in_flight_now, 0u);
  EXPECT_EQ(RouterCommandName(RouterCommand::kTransferBatch), "TRANSFER.BATCH");
}

// MODE applies to the cross-shard items; a shard's items go in chunks of at most
// max_batch_items_per_shard_command, in order.
TEST_F(RouterCoreTest, TransferBatchSplitsLargeGroupsAndRunsCrossShardItemsInItsMode) {
  RouterCoreOptions options;
  options.max_batch_items_per_shard_command = 2;
  Start(BatchShard([](const Args&) { return std::string("+OK\r\n"); }),
        BatchShard([](const Args&) { return std::string("+OK\r\n"); }), options);
  const uint64_t a1 = AccountIn(0, 7), a2 = AccountIn(0, 7, a1 + 1), b1 = AccountIn(8, 15);
  std::vector<Args> items;
  for (int i = 0; i < 5; ++i) items.push_back({StrCat(a1), StrCat(a2), StrCat(i + 1), "EUR", StrCat("s-", i)});
  items.push_back({StrCat(a2), StrCat(b1), "9", "EUR", "saga-1"});
  EXPECT_EQ(Run(BatchCall(items, {"transfer.batch", "mode", "SAGA"})), "[+OK, +OK, +OK, +OK, +OK, +OK]");
  const std::vector<Args> batches = BatchCommands(*shards_["shard-a"]);
  ASSERT_EQ(batches.size(), 3u);
  EXPECT_EQ(batches[0][1], "2");
  EXPECT_EQ(batches[0][6], "s-0");
  EXPECT_EQ(batches[0][11], "s-1");
  EXPECT_EQ(batches[1][1], "2");
  EXPECT_EQ(batches[1][6], "s-2");
  EXPECT_EQ(batches[1][11], "s-3");
  EXPECT_EQ(batches[2], (Args{"TRANSFER.BATCH", "1", StrCat(a1), StrCat(a2), "5", "EUR", "s-4"}));
  EXPECT_TRUE(BatchCommands(*shards_["shard-b"]).empty());
  bool saga = false;
  for (const Args& command : shards_["shard-a"]->commands()) saga = saga || command[0] == "SAGA.STEP";
  EXPECT_TRUE(saga);
}

// An item a shard answers -MOVED goes again alone, as a TRANSFER, where MOVED points;
// the other items keep the batch's answers.
TEST_F(RouterCoreTest, TransferBatchItemsMovedAreRetriedAloneAtTheNamedOwner) {
  // Two accounts of one partition: the partition moves with both.
  const uint64_t a1 = AccountIn(0, 7);
  const uint32_t partition = PartitionOf(a1, kPartitions);
  const uint64_t a2 = AccountIn(partition, partition, a1 + 1);
  const std::string moved = StrCat("-MOVED ", PartitionOf(a1, kPartitions), " shard-b partition moved\r\n");
  Start(BatchShard([moved](const Args& item) { return item[4] == "moving" ? moved : std::string("+OK\r\n"); }),
        Always("+OK\r\n"));
  EXPECT_EQ(Run(BatchCall({{StrCat(a1), StrCat(a2), "1", "USD", "stay"},
                           {StrCat(a1), StrCat(a2), "2", "USD", "moving"},
                           {StrCat(a2), StrCat(a1), "3", "USD", "stay-2"}})),
            "[+OK, +OK, +OK]");
  EXPECT_EQ(shards_["shard-b"]->commands(),
            (std::vector<Args>{{"TRANSFER", StrCat(a1), StrCat(a2), "2", "USD", "moving"}}));
  EXPECT_EQ(core_->stats().moved_retries, 1u);
  EXPECT_EQ(core_->stats().calls, 1u);
}

// A shard lost under its batch: each of its items gets the single TRANSFER's advice
// (outcome unknown, same txid); the other shard's items are answered normally.
TEST_F(RouterCoreTest, TransferBatchLinkFailureAnswersEachItemAsATransferWouldBe) {
  Start(Always(FakeShard::kHangUp), BatchShard([](const Args&) { return std::string("+OK\r\n"); }));
  const uint64_t a1 = AccountIn(0, 7), a2 = AccountIn(0, 7, a1 + 1);
  const uint64_t b1 = AccountIn(8, 15), b2 = AccountIn(8, 15, b1 + 1);
  std::optional<ShardReply> reply;
  core_->Execute(BatchCall({{StrCat(a1), StrCat(a2), "1", "USD", "l-0"},
                            {StrCat(b1), StrCat(b2), "1", "USD", "l-1"},
                            {StrCat(a2), StrCat(a1), "1", "USD", "l-2"}}),
                 [&](ShardReply value) { reply = std::move(value); });
  ASSERT_TRUE(loop_->RunUntil([&] { return reply.has_value(); }, kHangLimitMs).ok());
  ASSERT_EQ(reply->type, ShardReply::Type::kArray) << reply->ToString();
  ASSERT_EQ(reply->elements.size(), 3u);
  for (size_t i : {0, 2}) {
    const std::string item = reply->elements[i].ToString();
    EXPECT_TRUE(absl::StartsWith(ToAbsl(item), "-UNAVAILABLE shard-a: ")) << item;
    EXPECT_TRUE(absl::EndsWith(ToAbsl(item), "; outcome unknown, retry with the same txid")) << item;
  }
  EXPECT_EQ(reply->elements[1].ToString(), "+OK");
  EXPECT_EQ(core_->stats().outcome_unknown, 2u);
}

// A shard that does not know TRANSFER.BATCH (an older version) gets the items one by
// one as TRANSFERs.
TEST_F(RouterCoreTest, TransferBatchFallsBackToSingleTransfersOnAShardWithoutIt) {
  Start([](const Args& command) -> std::optional<std::string> {
    if (command[0] == "TRANSFER.BATCH") return std::string("-UNKNOWN_COMMAND unknown command 'TRANSFER.BATCH'\r\n");
    return std::string(command[5] == "poor" ? "-INSUFFICIENT_FUNDS no\r\n" : "+OK\r\n");
  }, Always("+OK\r\n"));
  const uint64_t a1 = AccountIn(0, 7), a2 = AccountIn(0, 7, a1 + 1);
  EXPECT_EQ(Run(BatchCall({{StrCat(a1), StrCat(a2), "1", "USD", "f-0"}, {StrCat(a2), StrCat(a1), "1", "USD", "poor"}})),
            "[+OK, -INSUFFICIENT_FUNDS no]");
  const auto& commands = shards_["shard-a"]->commands();
  ASSERT_EQ(commands.size(), 3u);
  EXPECT_EQ(commands[1], (Args{"TRANSFER", StrCat(a1), StrCat(a2), "1", "USD", "f-0"}));
  EXPECT_EQ(commands[2], (Args{"TRANSFER", StrCat(a2), StrCat(a1), "1", "USD", "poor"}));
}

// A bad header refuses the whole call at once (nothing sent); a batch is one call for
// max_in_flight however many items it carries.
TEST_F(RouterCoreTest, TransferBatchHeaderErrorsAndMaxInFlightCountTheCallOnce) {
  RouterCoreOptions options;
  options.max_in_flight = 1;
  auto never = [](const Args&) { return std::optional<std::string>(); };
  Start(never, never, options);
  const std::string a1 = StrCat(AccountIn(0, 7)), a2 = StrCat(AccountIn(0, 7, AccountIn(0, 7) + 1));
  const Args item = {a1, a2, "1", "USD", "h-1"};
  Args zero = BatchCall({item});
  zero[1] = "0";
  Args too_many = BatchCall({item});
  too_many[1] = "10001";
  Args short_count = BatchCall({item, item});
  short_count[1] = "3";
  const struct {
    Args args;
    std::string reply;
  } kCases[] = {
      {zero, "-MALFORMED n must be an integer from 1 to 10000"},
      {too_many, "-MALFORMED n must be an integer from 1 to 10000"},
      {BatchCall({item}, {"TRANSFER.BATCH", "MODE", "2pc"}), "-MALFORMED mode must be tcc or saga, got '2pc'"},
      {short_count, "-WRONG_ARITY TRANSFER.BATCH 3 takes exactly 3 groups of from to amount currency txid (15 "
                    "arguments after n), got 10"},
      {{"TRANSFER.BATCH", "1", a1, a2, "1", "USD"},
       "-WRONG_ARITY wrong number of arguments for 'TRANSFER.BATCH'; usage: TRANSFER.BATCH [MODE tcc|saga] n from "
       "to amount currency txid [from to amount currency txid ...]"},
  };
  for (const auto& test : kCases) EXPECT_EQ(RunAtOnce(test.args), test.reply) << test.args[1];
  EXPECT_EQ(Sent(), 0u);
  std::vector<Args> many(50, item);
  for (size_t i = 0; i < many.size(); ++i) many[i][4] = StrCat("h-", i);
  EXPECT_EQ(RunAtOnce(BatchCall(many)), "(later)");
  EXPECT_EQ(core_->in_flight(), 1u);
  const std::string busy = RunAtOnce(BatchCall({item}));
  EXPECT_TRUE(absl::StartsWith(ToAbsl(busy), "-BUSY router overloaded: 1 calls in flight")) << busy;
  ASSERT_TRUE(loop_->RunUntil([&] { return Sent() == 1; }, kHangLimitMs).ok());
  EXPECT_EQ(BatchCommands(*shards_["shard-a"]).at(0).size(), 2u + 5 * 50);
}

}  // namespace
}  // namespace wallet::router
