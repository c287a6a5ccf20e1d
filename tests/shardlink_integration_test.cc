// shardlink_integration_test.cc — src/shardlink (ShardConnection, ShardPool, the
// hiredis adapter on wallet::EventLoop) against real wallet-shard processes on real
// sockets: pipelining and reply order, reply parsing, AUTH, overload, a killed shard,
// a shard restarted elsewhere, a frozen shard and its command timeout, callbacks that
// remove their own shard, and 200k pipelined transfers.
//
// The test thread is the loop thread: it starts the shards, then runs the loop with
// RunUntil until what it waits for has happened. Every callback is counted, so
// "exactly once" is checked for every command sent. Nothing asserts on timing; the
// deadlines only bound how long a broken link can make a test wait.
#include <signal.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/match.h"
#include "common/event_loop.h"
#include "common/partition.h"
#include "common/result_code.h"
#include "common/strings.h"
#include "gtest/gtest.h"
#include "harness/process.h"
#include "shardlink/shard_connection.h"
#include "shardlink/shard_pool.h"

namespace wallet::test {
namespace {

using shardlink::LinkState;
using shardlink::ReplyCallback;
using shardlink::ShardConnection;
using shardlink::ShardConnectionOptions;
using shardlink::ShardLinkStats;
using shardlink::ShardPool;
using shardlink::ShardPoolOptions;
using shardlink::ShardReply;
using Command = std::vector<std::string>;

constexpr int64_t kWaitMs = 30'000;  // bounds a hang, never a success

std::string AddressOf(const ServerProcess& shard) { return StrCat("127.0.0.1:", shard.port()); }

std::vector<std::string_view> Views(const Command& command) {
  return std::vector<std::string_view>(command.begin(), command.end());
}

// The outcomes of a batch of commands, by the index each was sent with: how many
// times its callback ran (must end at exactly 1), in which order, what it got, and
// the link state the callback saw.
class Outcomes {
 public:
  explicit Outcomes(size_t count) : results_(count), calls_(count, 0) {}

  // The callback for command `index`; `observe` (optional) runs inside it.
  ReplyCallback Callback(size_t index, std::function<void(const absl::StatusOr<ShardReply>&)> observe = {}) {
    return [this, index, observe = std::move(observe)](absl::StatusOr<ShardReply> result) {
      ++calls_[index];
      order_.push_back(index);
      if (observe) observe(result);
      results_[index] = std::move(result);
    };
  }

  size_t count() const { return results_.size(); }
  size_t completed() const { return order_.size(); }
  bool all_done() const { return order_.size() >= results_.size(); }
  const std::vector<size_t>& order() const { return order_; }

  // The reply of command `index`, which must have succeeded at the link level.
  const ShardReply& reply(size_t index) const {
    static const ShardReply kMissing;
    const auto& result = results_[index];
    EXPECT_TRUE(result.has_value() && result->ok())
        << "command " << index << ": " << (result.has_value() ? result->status().ToString() : "no outcome");
    return result.has_value() && result->ok() ? **result : kMissing;
  }
  absl::Status status(size_t index) const {
    return results_[index].has_value() ? results_[index]->status() : absl::UnknownError("no outcome");
  }

  void ExpectEachCalledExactlyOnce() const {
    size_t wrong = 0;
    for (size_t i = 0; i < calls_.size(); ++i) {
      if (calls_[i] != 1 && wrong++ < 5) ADD_FAILURE() << "command " << i << ": callback ran " << calls_[i] << " times";
    }
    EXPECT_EQ(wrong, 0u) << "commands whose callback did not run exactly once";
  }

 private:
  std::vector<std::optional<absl::StatusOr<ShardReply>>> results_;
  std::vector<int> calls_;
  std::vector<size_t> order_;
};

class ShardLinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = TempDir::Create("shardlink");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_.emplace(*std::move(dir));
    auto loop = EventLoop::Create();
    ASSERT_TRUE(loop.ok()) << loop.status();
    loop_ = *std::move(loop);
  }

  std::unique_ptr<ServerProcess> StartShard(const std::vector<std::string>& flags = {"--in_memory"}) {
    auto shard = ServerProcess::Start(*dir_, StrCat("shard-", ++shard_starts_), WalletShardBinary(), flags);
    EXPECT_TRUE(shard.ok()) << shard.status();
    return shard.ok() ? *std::move(shard) : nullptr;
  }

  std::unique_ptr<ShardConnection> StartConnection(const std::string& address,
                                                   const ShardConnectionOptions& options = {}) {
    auto connection = ShardConnection::Create(*loop_, address, options);
    EXPECT_TRUE(connection.ok()) << connection.status();
    if (!connection.ok()) return nullptr;
    (*connection)->Start();
    return *std::move(connection);
  }

  std::unique_ptr<ShardPool> CreatePool(const ShardPoolOptions& options = {}) {
    auto pool = ShardPool::Create(*loop_, options);
    EXPECT_TRUE(pool.ok()) << pool.status();
    return pool.ok() ? *std::move(pool) : nullptr;
  }

  // A pool serving one shard, "s", at `shard`'s address.
  std::unique_ptr<ShardPool> PoolFor(const ServerProcess& shard, const ShardPoolOptions& options = {}) {
    auto pool = CreatePool(options);
    if (pool == nullptr) return nullptr;
    absl::Status set = pool->SetShards({{"s", AddressOf(shard)}});
    EXPECT_TRUE(set.ok()) << set;
    return set.ok() ? std::move(pool) : nullptr;
  }

  bool RunUntil(absl::FunctionRef<bool()> done) {
    absl::Status status = loop_->RunUntil(done, kWaitMs);
    EXPECT_TRUE(status.ok()) << status;
    return status.ok();
  }

  static bool AllConnected(const ShardPool& pool) {
    for (const auto& link : pool.Links()) {
      if (link.state != LinkState::kConnected) return false;
    }
    return pool.shard_count() > 0;
  }

  // Sends PING until one is answered with PONG: the link works again.
  bool WaitForPong(ShardConnection& connection) {
    bool answered = false;
    bool probe_out = false;
    return RunUntil([&] {
      if (!answered && !probe_out) {
        std::string_view ping[] = {"PING"};
        probe_out = connection
                        .Send(ping,
                              [&](absl::StatusOr<ShardReply> reply) {
                                probe_out = false;
                                answered = reply.ok() && reply->type == ShardReply::Type::kStatus &&
                                           reply->text == "PONG";
                              })
                        .ok();
      }
      return answered;
    });
  }

  std::optional<TempDir> dir_;
  std::unique_ptr<EventLoop> loop_;
  int shard_starts_ = 0;
};

// --- Pipelining and replies -----------------------------------------------------------

TEST_F(ShardLinkTest, PipelinedCommandsOnOneConnectionAreAnsweredInOrderAndParsed) {
  auto shard = StartShard();
  ASSERT_NE(shard, nullptr);
  auto connection = StartConnection(AddressOf(*shard));
  ASSERT_NE(connection, nullptr);
  const std::vector<Command> commands = {
      {"OPEN", "1", "EUR"},                          // 0  +OK
      {"OPEN", "2", "EUR"},                          // 1  +OK
      {"DEPOSIT", "1", "1000", "dep-1"},             // 2  +OK
      {"TRANSFER", "1", "2", "300", "EUR", "tr-1"},  // 3  +OK
      {"TRANSFER", "1", "2", "5000", "EUR", "tr-2"}, // 4  -INSUFFICIENT_FUNDS
      {"OPEN", "1", "USD"},                          // 5  -ACCOUNT_EXISTS
      {"BALANCE", "1"},                              // 6  [700, 0, EUR]
      {"BALANCE", "2"},                              // 7  [300, 0, EUR]
      {"BALANCE", "999"},                            // 8  -UNKNOWN_ACCOUNT
      {"PING"},                                      // 9  +PONG
      {"DEPOSIT", "1", "ten", "dep-2"},              // 10 -MALFORMED
      {"TRANSFER", "1", "2", "300", "EUR", "tr-1"},  // 11 +OK (replay: first outcome)
      {"TRANSFER", "1", "2", "301", "EUR", "tr-1"},  // 12 -TXID_REUSED
  };
  Outcomes outcomes(commands.size());
  // Sent at once, before the link is up: they wait for it and go out in order.
  for (size_t i = 0; i < commands.size(); ++i) {
    ASSERT_TRUE(connection->Send(Views(commands[i]), outcomes.Callback(i)).ok()) << i;
  }
  EXPECT_EQ(connection->in_flight(), commands.size());
  ASSERT_TRUE(RunUntil([&] { return outcomes.all_done(); }));
  outcomes.ExpectEachCalledExactlyOnce();
  for (size_t i = 0; i < outcomes.order().size(); ++i) EXPECT_EQ(outcomes.order()[i], i) << "reply order";

  for (size_t i : {0, 1, 2, 3, 11}) EXPECT_TRUE(outcomes.reply(i).is_ok()) << i << " " << outcomes.reply(i).ToString();
  EXPECT_EQ(outcomes.reply(4).error_code(), ResultCode::kInsufficientFunds) << outcomes.reply(4).ToString();
  EXPECT_EQ(outcomes.reply(5).error_code(), ResultCode::kAccountExists) << outcomes.reply(5).ToString();
  EXPECT_EQ(outcomes.reply(6).ToString(), "[:700, :0, \"EUR\"]");
  EXPECT_EQ(outcomes.reply(7).ToString(), "[:300, :0, \"EUR\"]");
  EXPECT_EQ(outcomes.reply(8).error_code(), ResultCode::kUnknownAccount) << outcomes.reply(8).ToString();
  EXPECT_EQ(outcomes.reply(9).ToString(), "+PONG");
  EXPECT_EQ(outcomes.reply(10).error_code(), ResultCode::kMalformed) << outcomes.reply(10).ToString();
  EXPECT_EQ(outcomes.reply(12).error_code(), ResultCode::kTxidReused) << outcomes.reply(12).ToString();

  ShardLinkStats stats = connection->stats();
  EXPECT_EQ(stats.sent, commands.size());
  EXPECT_EQ(stats.replied, commands.size());
  EXPECT_EQ(stats.error_replies, 5u);
  EXPECT_EQ(stats.error_replies_by_code[static_cast<size_t>(ResultCode::kInsufficientFunds)], 1u);
  EXPECT_EQ(stats.in_flight, 0u);
  EXPECT_EQ(stats.connected, 1u);
  EXPECT_EQ(connection->state(), LinkState::kConnected);

  // Once connected, a second pipeline goes straight out.
  Outcomes balances(500);
  const Command balance = {"BALANCE", "1"};
  for (size_t i = 0; i < balances.count(); ++i) {
    ASSERT_TRUE(connection->Send(Views(balance), balances.Callback(i)).ok());
  }
  ASSERT_TRUE(RunUntil([&] { return balances.all_done(); }));
  balances.ExpectEachCalledExactlyOnce();
  for (size_t i = 0; i < balances.count(); ++i) {
    ASSERT_EQ(balances.order()[i], i);
    ASSERT_EQ(balances.reply(i).ToString(), "[:700, :0, \"EUR\"]");
  }
}

TEST_F(ShardLinkTest, PoolRoutesByShardIdAndParsesMoved) {
  auto a = StartShard();
  auto b = StartShard({"--in_memory", "--partitions=0"});
  ASSERT_TRUE(a != nullptr && b != nullptr);
  auto pool = CreatePool();
  ASSERT_NE(pool, nullptr);
  ASSERT_TRUE(pool->SetShards({{"a", AddressOf(*a)}, {"b", AddressOf(*b)}}).ok());
  EXPECT_EQ(pool->Links().size(), 4u);  // two connections per shard

  // On b, an account of partition 0 (owned) and one of another partition (MOVED).
  AccountId owned = 0, foreign = 0;
  for (AccountId id = 1; owned == 0 || foreign == 0; ++id) {
    (PartitionOf(id, kDefaultPartitionCount) == 0 ? owned : foreign) = id;
  }
  // The pool spreads a shard's commands over its connections, so it keeps no order
  // between them: each phase waits for the replies of the one before.
  const std::vector<std::vector<std::pair<std::string, Command>>> phases = {
      {{"a", {"OPEN", "1", "EUR"}}, {"b", {"OPEN", StrCat(owned), "USD"}}},
      {{"a", {"DEPOSIT", "1", "100", "dep-a"}}, {"b", {"DEPOSIT", StrCat(owned), "200", "dep-b"}}},
      {{"a", {"BALANCE", "1"}}, {"b", {"BALANCE", StrCat(owned)}}, {"b", {"BALANCE", StrCat(foreign)}}},
  };
  std::vector<std::unique_ptr<Outcomes>> results;
  size_t sent_count = 0;
  for (const auto& phase : phases) {
    results.push_back(std::make_unique<Outcomes>(phase.size()));
    Outcomes& outcomes = *results.back();
    for (size_t i = 0; i < phase.size(); ++i) {
      ASSERT_TRUE(pool->Send(phase[i].first, Views(phase[i].second), outcomes.Callback(i)).ok()) << i;
      ++sent_count;
    }
    ASSERT_TRUE(RunUntil([&] { return outcomes.all_done(); }));
    outcomes.ExpectEachCalledExactlyOnce();
  }
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_TRUE(results[0]->reply(i).is_ok()) << results[0]->reply(i).ToString();
    EXPECT_TRUE(results[1]->reply(i).is_ok()) << results[1]->reply(i).ToString();
  }
  EXPECT_EQ(results[2]->reply(0).ToString(), "[:100, :0, \"EUR\"]");
  EXPECT_EQ(results[2]->reply(1).ToString(), "[:200, :0, \"USD\"]");
  const ShardReply& moved = results[2]->reply(2);
  EXPECT_EQ(moved.error_code(), ResultCode::kWrongPartition) << moved.ToString();
  EXPECT_EQ(moved.error_word(), "MOVED");
  EXPECT_EQ(pool->stats().error_replies_by_code[static_cast<size_t>(ResultCode::kWrongPartition)], 1u);

  // Unknown shard ids and bad addresses are refused; a bad map changes nothing.
  std::string_view ping[] = {"PING"};
  EXPECT_TRUE(absl::IsNotFound(pool->Send("c", ping, [](absl::StatusOr<ShardReply>) {})));
  EXPECT_TRUE(absl::IsInvalidArgument(pool->SetShards({{"a", AddressOf(*a)}, {"c", "nowhere"}})));
  EXPECT_TRUE(absl::IsInvalidArgument(pool->SetShards({{"", AddressOf(*a)}})));
  EXPECT_EQ(pool->shard_count(), 2u);
  EXPECT_FALSE(pool->HasShard("c"));

  // With both of a's connections up, a burst is spread over the two.
  ASSERT_TRUE(RunUntil([&] { return AllConnected(*pool); }));
  Outcomes burst(1000);
  for (size_t i = 0; i < burst.count(); ++i) ASSERT_TRUE(pool->Send("a", ping, burst.Callback(i)).ok());
  for (const auto& link : pool->Links()) {
    if (link.shard_id == "a") {
      EXPECT_GE(link.in_flight, 400u) << link.address;
    }
  }
  ASSERT_TRUE(RunUntil([&] { return burst.all_done(); }));
  burst.ExpectEachCalledExactlyOnce();
  ShardLinkStats stats = pool->stats();
  EXPECT_EQ(stats.sent, sent_count + burst.count());
  EXPECT_EQ(stats.replied, stats.sent);
  EXPECT_EQ(stats.refused_unavailable, 1u);  // the unknown shard id
  EXPECT_EQ(stats.connected, 4u);
}

// --- AUTH -----------------------------------------------------------------------------

ShardConnectionOptions WithPassword(const std::string& password) {
  ShardConnectionOptions options;
  options.password = password;
  return options;
}

TEST_F(ShardLinkTest, AuthenticatesToAPasswordShard) {
  auto shard = StartShard({"--in_memory", "--password=s3cret"});
  ASSERT_NE(shard, nullptr);
  auto good = StartConnection(AddressOf(*shard), WithPassword("s3cret"));
  auto none = StartConnection(AddressOf(*shard));
  ASSERT_TRUE(good != nullptr && none != nullptr);
  Outcomes outcomes(3);
  const Command open = {"OPEN", "5", "EUR"};
  const Command balance = {"BALANCE", "5"};
  ASSERT_TRUE(good->Send(Views(open), outcomes.Callback(0)).ok());
  ASSERT_TRUE(good->Send(Views(balance), outcomes.Callback(1)).ok());
  ASSERT_TRUE(none->Send(Views(balance), outcomes.Callback(2)).ok());
  ASSERT_TRUE(RunUntil([&] { return outcomes.all_done(); }));
  outcomes.ExpectEachCalledExactlyOnce();
  EXPECT_TRUE(outcomes.reply(0).is_ok()) << outcomes.reply(0).ToString();
  EXPECT_EQ(outcomes.reply(1).ToString(), "[:0, :0, \"EUR\"]");
  EXPECT_EQ(outcomes.reply(2).error_code(), ResultCode::kNotAuthenticated) << outcomes.reply(2).ToString();
  EXPECT_EQ(good->stats().auth_failures, 0u);
}

TEST_F(ShardLinkTest, WrongPasswordIsAClearErrorAndNothingIsSent) {
  auto shard = StartShard({"--in_memory", "--password=s3cret"});
  ASSERT_NE(shard, nullptr);
  auto connection = StartConnection(AddressOf(*shard), WithPassword("wrong"));
  ASSERT_NE(connection, nullptr);
  Outcomes outcomes(2);
  std::optional<LinkState> state_in_callback;
  absl::Status send_in_backoff;
  const Command open = {"OPEN", "6", "EUR"};
  ASSERT_TRUE(connection->Send(Views(open), outcomes.Callback(0, [&](const absl::StatusOr<ShardReply>&) {
    state_in_callback = connection->state();
    std::string_view ping[] = {"PING"};
    send_in_backoff = connection->Send(ping, [](absl::StatusOr<ShardReply>) { ADD_FAILURE() << "refused Send ran"; });
  })).ok());
  ASSERT_TRUE(connection->Send(Views(open), outcomes.Callback(1)).ok());
  ASSERT_TRUE(RunUntil([&] { return outcomes.all_done(); }));
  outcomes.ExpectEachCalledExactlyOnce();
  for (size_t i = 0; i < 2; ++i) {
    absl::Status status = outcomes.status(i);
    EXPECT_TRUE(absl::IsUnauthenticated(status)) << status;
    EXPECT_TRUE(absl::StrContains(status.message(), "AUTH refused")) << status;
    EXPECT_TRUE(absl::StrContains(status.message(), "WRONGPASS")) << status;
    EXPECT_TRUE(absl::StrContains(status.message(), "not sent")) << status;
  }
  EXPECT_EQ(state_in_callback, LinkState::kBackoff);
  EXPECT_TRUE(absl::IsUnauthenticated(send_in_backoff)) << send_in_backoff;
  EXPECT_TRUE(absl::StrContains(connection->last_error(), "WRONGPASS")) << connection->last_error();
  EXPECT_GE(connection->stats().auth_failures, 1u);
  EXPECT_EQ(connection->stats().replied, 0u);
}

// --- Overload -------------------------------------------------------------------------

TEST_F(ShardLinkTest, MaxInFlightRefusesAtOnceWithoutBlocking) {
  auto shard = StartShard();
  ASSERT_NE(shard, nullptr);
  ShardConnectionOptions options;
  options.max_in_flight = 8;
  auto connection = StartConnection(AddressOf(*shard), options);
  ASSERT_NE(connection, nullptr);
  ASSERT_TRUE(RunUntil([&] { return connection->state() == LinkState::kConnected; }));
  std::string_view ping[] = {"PING"};
  Outcomes outcomes(9);
  // No loop turn runs between these Sends, so no reply can free a slot.
  for (size_t i = 0; i < 8; ++i) ASSERT_TRUE(connection->Send(ping, outcomes.Callback(i)).ok());
  absl::Status refused = connection->Send(ping, [](absl::StatusOr<ShardReply>) { ADD_FAILURE() << "ran"; });
  EXPECT_TRUE(absl::IsResourceExhausted(refused)) << refused;
  EXPECT_EQ(connection->stats().overloads, 1u);
  EXPECT_EQ(connection->in_flight(), 8u);
  ASSERT_TRUE(RunUntil([&] { return outcomes.completed() == 8; }));
  ASSERT_TRUE(connection->Send(ping, outcomes.Callback(8)).ok());  // room again
  ASSERT_TRUE(RunUntil([&] { return outcomes.all_done(); }));
  outcomes.ExpectEachCalledExactlyOnce();

  // A pool refuses once every usable connection of the shard is full.
  ShardPoolOptions pool_options;
  pool_options.connection.max_in_flight = 4;
  auto pool = PoolFor(*shard, pool_options);
  ASSERT_NE(pool, nullptr);
  ASSERT_TRUE(RunUntil([&] { return AllConnected(*pool); }));
  Outcomes pooled(8);
  for (size_t i = 0; i < 8; ++i) ASSERT_TRUE(pool->Send("s", ping, pooled.Callback(i)).ok()) << i;
  EXPECT_TRUE(absl::IsResourceExhausted(pool->Send("s", ping, [](absl::StatusOr<ShardReply>) {})));
  EXPECT_EQ(pool->stats().overloads, 1u);
  ASSERT_TRUE(RunUntil([&] { return pooled.all_done(); }));
  pooled.ExpectEachCalledExactlyOnce();
}

// --- Failures ---------------------------------------------------------------------------

TEST_F(ShardLinkTest, KilledShardFailsInFlightCommandsOnceWithUnavailableAndBacksOff) {
  auto shard = StartShard();
  ASSERT_NE(shard, nullptr);
  auto connection = StartConnection(AddressOf(*shard));
  ASSERT_NE(connection, nullptr);
  ASSERT_TRUE(RunUntil([&] { return connection->state() == LinkState::kConnected; }));
  // Frozen, the shard cannot answer: the commands stay in flight until it dies.
  ASSERT_TRUE(shard->process().Freeze().ok());
  constexpr size_t kCommands = 50;
  Outcomes outcomes(kCommands);
  std::vector<LinkState> states;
  std::vector<Command> commands;
  for (size_t i = 0; i < kCommands; ++i) commands.push_back({"OPEN", StrCat(100 + i), "EUR"});
  for (size_t i = 0; i < kCommands; ++i) {
    ASSERT_TRUE(connection
                    ->Send(Views(commands[i]), outcomes.Callback(i, [&](const absl::StatusOr<ShardReply>&) {
                      states.push_back(connection->state());
                    }))
                    .ok());
  }
  for (int turn = 0; turn < 5; ++turn) ASSERT_TRUE(loop_->RunOnce(10).ok());  // written out
  ASSERT_TRUE(shard->process().Signal(SIGKILL).ok());
  ASSERT_TRUE(RunUntil([&] { return outcomes.all_done(); }));
  outcomes.ExpectEachCalledExactlyOnce();
  for (size_t i = 0; i < kCommands; ++i) {
    absl::Status status = outcomes.status(i);
    EXPECT_TRUE(absl::IsUnavailable(status)) << i << ": " << status;
    EXPECT_TRUE(absl::StrContains(status.message(), "outcome is unknown")) << status;
  }
  for (LinkState state : states) EXPECT_EQ(state, LinkState::kBackoff);
  ShardLinkStats stats = connection->stats();
  EXPECT_EQ(stats.links_lost, 1u);
  EXPECT_EQ(stats.failed_unavailable, kCommands);
  EXPECT_EQ(stats.replied, 0u);
  EXPECT_FALSE(shard->Stop().success());  // reaped: killed by SIGKILL

  // Nobody listens any more: it keeps trying, with backoff, and commands are refused
  // (in backoff) or fail with Unavailable (while an attempt is under way).
  ASSERT_TRUE(RunUntil([&] { return connection->stats().connect_failures >= 2; }));
  EXPECT_GE(connection->stats().reconnects, 2u);
  EXPECT_NE(connection->state(), LinkState::kConnected);
  std::string_view ping[] = {"PING"};
  Outcomes late(1);
  absl::Status sent = connection->Send(ping, late.Callback(0));
  if (sent.ok()) {
    ASSERT_TRUE(RunUntil([&] { return late.all_done(); }));
    EXPECT_TRUE(absl::IsUnavailable(late.status(0))) << late.status(0);
  } else {
    EXPECT_TRUE(absl::IsUnavailable(sent)) << sent;
  }
}

TEST_F(ShardLinkTest, ShardRestartedOnAnotherPortWorksAgainAfterSetShards) {
  // A durable shard: its restart on another port keeps the accounts.
  const std::vector<std::string> flags = {"--data_dir=" + dir_->File("data")};
  auto first = StartShard(flags);
  ASSERT_NE(first, nullptr);
  auto pool = PoolFor(*first);
  ASSERT_NE(pool, nullptr);
  const Command open = {"OPEN", "1", "EUR"};
  const Command deposit = {"DEPOSIT", "1", "500", "dep-1"};
  const Command balance = {"BALANCE", "1"};
  for (const Command* command : {&open, &deposit}) {
    Outcomes before(1);
    ASSERT_TRUE(pool->Send("s", Views(*command), before.Callback(0)).ok());
    ASSERT_TRUE(RunUntil([&] { return before.all_done(); }));
    EXPECT_TRUE(before.reply(0).is_ok()) << before.reply(0).ToString();
  }
  ASSERT_TRUE(RunUntil([&] { return AllConnected(*pool); }));

  EXPECT_TRUE(first->Stop().success());
  ASSERT_TRUE(RunUntil([&] {
    for (const auto& link : pool->Links()) {
      if (link.state == LinkState::kConnected) return false;
    }
    return true;
  }));
  // While it is down, commands are refused at once or fail as not sent.
  Outcomes down(1);
  absl::Status sent_while_down = pool->Send("s", Views(balance), down.Callback(0));
  if (sent_while_down.ok()) {
    ASSERT_TRUE(RunUntil([&] { return down.all_done(); }));
    EXPECT_TRUE(absl::IsUnavailable(down.status(0))) << down.status(0);
  } else {
    EXPECT_TRUE(absl::IsUnavailable(sent_while_down)) << sent_while_down;
  }

  auto second = StartShard(flags);  // the same data, another port
  ASSERT_NE(second, nullptr);
  ASSERT_TRUE(pool->SetShards({{"s", AddressOf(*second)}}).ok());
  for (const auto& link : pool->Links()) EXPECT_EQ(link.address, AddressOf(*second));
  ASSERT_TRUE(RunUntil([&] { return AllConnected(*pool); }));
  Outcomes after(1);
  ASSERT_TRUE(pool->Send("s", Views(balance), after.Callback(0)).ok());
  ASSERT_TRUE(RunUntil([&] { return after.all_done(); }));
  after.ExpectEachCalledExactlyOnce();
  EXPECT_EQ(after.reply(0).ToString(), "[:500, :0, \"EUR\"]");

  // Removing the shard fails what is in flight on it, exactly once.
  ASSERT_TRUE(second->process().Freeze().ok());
  Outcomes removed(10);
  for (size_t i = 0; i < removed.count(); ++i) ASSERT_TRUE(pool->Send("s", Views(balance), removed.Callback(i)).ok());
  ASSERT_TRUE(loop_->RunOnce(10).ok());
  ASSERT_TRUE(pool->SetShards({}).ok());
  ASSERT_TRUE(RunUntil([&] { return removed.all_done(); }));
  removed.ExpectEachCalledExactlyOnce();
  for (size_t i = 0; i < removed.count(); ++i) EXPECT_TRUE(absl::IsUnavailable(removed.status(i))) << removed.status(i);
  EXPECT_FALSE(pool->HasShard("s"));
  EXPECT_TRUE(absl::IsNotFound(pool->Send("s", Views(balance), [](absl::StatusOr<ShardReply>) {})));
  ShardLinkStats stats = pool->stats();  // removed connections still count
  EXPECT_GE(stats.failed_unavailable, removed.count());
  EXPECT_EQ(stats.in_flight, 0u);
  EXPECT_EQ(stats.connected, 0u);
  ASSERT_TRUE(second->process().Thaw().ok());
}

TEST_F(ShardLinkTest, FrozenShardHitsTheCommandTimeoutThenWorksAfterThaw) {
  auto shard = StartShard();
  ASSERT_NE(shard, nullptr);
  ShardConnectionOptions options;
  options.command_timeout_ms = 300;
  options.connect_timeout_ms = 300;
  auto connection = StartConnection(AddressOf(*shard), options);
  ASSERT_NE(connection, nullptr);
  ASSERT_TRUE(RunUntil([&] { return connection->state() == LinkState::kConnected; }));
  ASSERT_TRUE(shard->process().Freeze().ok());
  std::string_view ping[] = {"PING"};
  Outcomes outcomes(5);
  for (size_t i = 0; i < outcomes.count(); ++i) ASSERT_TRUE(connection->Send(ping, outcomes.Callback(i)).ok());
  ASSERT_TRUE(RunUntil([&] { return outcomes.all_done(); }));
  outcomes.ExpectEachCalledExactlyOnce();
  for (size_t i = 0; i < outcomes.count(); ++i) {
    absl::Status status = outcomes.status(i);
    EXPECT_TRUE(absl::IsUnavailable(status)) << status;
    EXPECT_TRUE(absl::StrContains(status.message(), "command timeout")) << status;
  }
  EXPECT_GE(connection->stats().command_timeouts, 1u);
  EXPECT_EQ(connection->stats().links_lost, connection->stats().command_timeouts);

  ASSERT_TRUE(shard->process().Thaw().ok());
  ASSERT_TRUE(WaitForPong(*connection));
  EXPECT_EQ(connection->state(), LinkState::kConnected);
}

TEST_F(ShardLinkTest, RefusedConnectionBacksOffAndFailsWaitingCommandsAsNotSent) {
  // A port nobody listens on: a shard's, after it stopped.
  auto shard = StartShard();
  ASSERT_NE(shard, nullptr);
  std::string address = AddressOf(*shard);
  EXPECT_TRUE(shard->Stop().success());
  ShardConnectionOptions options;
  options.backoff_initial_ms = 5;
  options.backoff_max_ms = 20;
  auto connection = StartConnection(address, options);
  ASSERT_NE(connection, nullptr);
  std::string_view ping[] = {"PING"};
  Outcomes outcomes(1);
  absl::Status sent = connection->Send(ping, outcomes.Callback(0));
  if (sent.ok()) {  // the attempt was still under way: it waited, then failed
    ASSERT_TRUE(RunUntil([&] { return outcomes.all_done(); }));
    EXPECT_TRUE(absl::IsUnavailable(outcomes.status(0))) << outcomes.status(0);
    EXPECT_TRUE(absl::StrContains(outcomes.status(0).message(), "not sent")) << outcomes.status(0);
  } else {  // refused at once by the kernel: in backoff already
    EXPECT_TRUE(absl::IsUnavailable(sent)) << sent;
  }
  ASSERT_TRUE(RunUntil([&] { return connection->stats().connect_failures >= 4; }));
  EXPECT_TRUE(absl::StrContains(connection->last_error(), "refused")) << connection->last_error();
  EXPECT_EQ(connection->stats().links_lost, 0u);
}

// --- Reentrancy ------------------------------------------------------------------------

TEST_F(ShardLinkTest, CallbackMayRemoveItsOwnShardFromThePool) {
  auto shard = StartShard();
  ASSERT_NE(shard, nullptr);
  auto pool = PoolFor(*shard);
  ASSERT_NE(pool, nullptr);
  ASSERT_TRUE(RunUntil([&] { return AllConnected(*pool); }));
  std::string_view ping[] = {"PING"};
  Outcomes outcomes(200);
  for (size_t i = 0; i < outcomes.count(); ++i) {
    auto observe = [&, i](const absl::StatusOr<ShardReply>&) {
      if (i == 0) {
        EXPECT_TRUE(pool->SetShards({}).ok());  // from inside a reply callback
      }
    };
    ASSERT_TRUE(pool->Send("s", ping, outcomes.Callback(i, observe)).ok());
  }
  ASSERT_TRUE(RunUntil([&] { return outcomes.all_done(); }));
  outcomes.ExpectEachCalledExactlyOnce();
  EXPECT_TRUE(outcomes.status(0).ok()) << outcomes.status(0);
  size_t unavailable = 0;
  for (size_t i = 1; i < outcomes.count(); ++i) {
    absl::Status status = outcomes.status(i);
    EXPECT_TRUE(status.ok() || absl::IsUnavailable(status)) << status;
    unavailable += absl::IsUnavailable(status);
  }
  // Command 0 was the first on its connection, so the others sent on that one were
  // still in flight when its callback closed it.
  EXPECT_GT(unavailable, 0u);
  for (int turn = 0; turn < 3; ++turn) ASSERT_TRUE(loop_->RunOnce(1).ok());  // retired links destroyed
  EXPECT_EQ(pool->shard_count(), 0u);
  EXPECT_EQ(loop_->watcher_count(), 0u);  // every hiredis context freed
  ShardLinkStats stats = pool->stats();
  EXPECT_EQ(stats.replied + stats.failed_unavailable, outcomes.count());
}

// --- Volume -------------------------------------------------------------------------------

TEST_F(ShardLinkTest, TwoHundredThousandPipelinedTransfersEachCompleteExactlyOnce) {
  auto shard = StartShard();
  ASSERT_NE(shard, nullptr);
  ShardPoolOptions options;
  options.connection.max_in_flight = 4096;
  auto pool = PoolFor(*shard, options);
  ASSERT_NE(pool, nullptr);
  const std::vector<Command> setup = {
      {"OPEN", "1", "EUR"}, {"OPEN", "2", "EUR"}, {"DEPOSIT", "1", "1000000000", "seed-1"}};
  Outcomes seeded(setup.size());
  for (size_t i = 0; i < setup.size(); ++i) ASSERT_TRUE(pool->Send("s", Views(setup[i]), seeded.Callback(i)).ok());
  ASSERT_TRUE(RunUntil([&] { return seeded.all_done(); }));
  for (size_t i = 0; i < setup.size(); ++i) ASSERT_TRUE(seeded.reply(i).is_ok()) << seeded.reply(i).ToString();

  constexpr size_t kTransfers = 200'000;
  std::vector<uint8_t> calls(kTransfers, 0);
  size_t completed = 0, not_ok = 0, next = 0, overloads = 0;
  auto pump = [&] {
    // Sends until the pool says it is full: the overload is the back-pressure.
    while (next < kTransfers) {
      std::string txid = StrCat("t-", next);
      std::string_view transfer[] = {"TRANSFER", "1", "2", "1", "EUR", txid};
      size_t index = next;
      absl::Status sent = pool->Send("s", transfer, [&, index](absl::StatusOr<ShardReply> reply) {
        ++calls[index];
        ++completed;
        if (!reply.ok() || !reply->is_ok()) ++not_ok;
      });
      if (absl::IsResourceExhausted(sent)) {
        ++overloads;
        return;
      }
      ASSERT_TRUE(sent.ok()) << sent;
      ++next;
    }
  };
  ASSERT_TRUE(RunUntil([&] {
    pump();
    return completed == kTransfers;
  }));
  EXPECT_EQ(not_ok, 0u);
  size_t wrong = 0;
  for (uint8_t count : calls) wrong += count != 1;
  EXPECT_EQ(wrong, 0u) << "transfers whose callback did not run exactly once";
  EXPECT_GT(overloads, 0u) << "the bound was never reached: the test did not pipeline";

  Outcomes balances(2);
  const Command balance_1 = {"BALANCE", "1"};
  const Command balance_2 = {"BALANCE", "2"};
  ASSERT_TRUE(pool->Send("s", Views(balance_1), balances.Callback(0)).ok());
  ASSERT_TRUE(pool->Send("s", Views(balance_2), balances.Callback(1)).ok());
  ASSERT_TRUE(RunUntil([&] { return balances.all_done(); }));
  EXPECT_EQ(balances.reply(0).ToString(), StrCat("[:", 1'000'000'000 - kTransfers, ", :0, \"EUR\"]"));
  EXPECT_EQ(balances.reply(1).ToString(), StrCat("[:", kTransfers, ", :0, \"EUR\"]"));
  ShardLinkStats stats = pool->stats();
  EXPECT_EQ(stats.sent, setup.size() + kTransfers + 2);
  EXPECT_EQ(stats.replied, stats.sent);
  EXPECT_EQ(stats.error_replies, 0u);
  EXPECT_EQ(stats.overloads, overloads);
}

}  // namespace
}  // namespace wallet::test
