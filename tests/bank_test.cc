// bank_test.cc — the Jepsen "bank" workload on a real local cluster: a real
// ZooKeeper, 3 wallet-shard processes (durable, --data_dir) and 2 wallet-router
// processes, hiredis clients, SIGKILL as the fault.
//
// ~60 USD accounts spread over every shard are funded with DEPOSIT. Then C client
// threads (one hiredis connection per router each) send random TRANSFERs between
// random accounts — mostly cross-shard, some same-shard; small amounts, now and then
// one too large to pass; MODE tcc or saga at random; a unique txid each — while the
// test's main thread SIGKILLs a random shard or router at random intervals and
// restarts it on the same data folder and port. A client that gets UNAVAILABLE,
// BUSY, MOVED, LEASED, LOG_UNAVAILABLE or loses its connection retries the same txid
// on the other router (bounded, with backoff), then records the outcome as unknown.
// Each txid ends up as: told OK, told rejected (with the code), told ABORTED, or
// unknown.
//
// At the end: the chaos stops, every process is made to run, the routers' resolvers
// are given (bounded) time to finish every row in doubt (each shard's ROW.INDOUBT 0
// empty and INFO keyspace open_rows 0), and then:
//   (a) Σ over shards of available+held (AUDIT) and Σ over accounts of
//       available+held (BALANCE through a router, ACCOUNT straight to the shard)
//       both equal Σ deposits; AUDIT's deposited is Σ deposits, withdrawn 0, and
//       Σ moved_in = Σ moved_out;
//   (b) no balance is negative;
//   (c) held and pending_credit are 0 on every account and every shard;
//   (d) every shard's AUDIT says conserved 1;
//   (e) `TX txid` for every txid is committed, aborted or none (nothing in doubt);
//       every transfer told OK is committed, every one told rejected or ABORTED is
//       not;
//   (f) the committed transfers replayed on the initial balances give exactly each
//       account's final balance (each applied exactly once).
//
// Knobs (environment): WALLET_BANK_SECONDS (load, default 12), WALLET_BANK_CLIENTS
// (threads, 6), WALLET_BANK_ACCOUNTS (60), WALLET_BANK_CROSS_PERCENT (80),
// WALLET_BANK_CHAOS (1; 0: no kills), WALLET_BANK_KILL_MIN_MS / _MAX_MS (300 / 1500:
// the pause before each kill), WALLET_BANK_ATTEMPTS (12 sends per txid),
// WALLET_BANK_SETTLE_S (60: how long the resolvers may take), WALLET_BANK_SEED (the
// random choices; printed), WALLET_BANK_ZK_SESSION_MS (3000: the processes' ZooKeeper
// session, which bounds how soon a killed one can take its id back),
// WALLET_BANK_REQUIRE_CROSS (0; 1: fail when the routers refuse cross-shard
// transfers instead of running the same-shard part only). WALLET_TEST_KEEP_TMP=1
// keeps the cluster folder with every process's log (one per start).
//
// Nothing asserts on timing: waits poll with deadlines that bound a failure.
#include <hiredis/hiredis.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cluster/layout.h"
#include "gtest/gtest.h"
#include "harness/cluster.h"

namespace wallet::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr int kShardCount = 3;
constexpr uint32_t kPartitions = 64;
constexpr int64_t kInitialBalance = 10'000;

int64_t EnvInt(const char* name, int64_t fallback) {
  const char* text = std::getenv(name);
  int64_t value = 0;
  return text != nullptr && absl::SimpleAtoi(text, &value) ? value : fallback;
}

// --- A reply as a tree, and one blocking hiredis connection ---------------------

struct Value {
  enum Type { kLost, kNil, kStatus, kError, kInteger, kString, kArray } type = kNil;
  std::string text;  // status, error (without '-'), string, integer in decimal, or why lost
  std::vector<Value> items;

  bool lost() const { return type == kLost; }
  bool error() const { return type == kError; }
  std::string Code() const { return error() ? text.substr(0, text.find(' ')) : ""; }
  std::string ToString() const {
    switch (type) {
      case kLost: return "!lost: " + text;
      case kNil: return "(nil)";
      case kStatus: return "+" + text;
      case kError: return "-" + text;
      case kInteger: return ":" + text;
      case kString: return text;
      case kArray: {
        std::string out = "[";
        for (size_t i = 0; i < items.size(); ++i) absl::StrAppend(&out, i == 0 ? "" : ", ", items[i].ToString());
        return out + "]";
      }
    }
    return "?";
  }
  // Field/value pairs of an array reply (values as text).
  std::map<std::string, std::string> Fields() const {
    std::map<std::string, std::string> fields;
    for (size_t i = 0; type == kArray && i + 1 < items.size(); i += 2) fields[items[i].text] = items[i + 1].text;
    return fields;
  }
};

Value FromReply(const redisReply* reply) {
  Value value;
  switch (reply->type) {
    case REDIS_REPLY_STATUS: value.type = Value::kStatus; break;
    case REDIS_REPLY_ERROR: value.type = Value::kError; break;
    case REDIS_REPLY_STRING: value.type = Value::kString; break;
    case REDIS_REPLY_INTEGER:
      value.type = Value::kInteger;
      value.text = absl::StrCat(reply->integer);
      return value;
    case REDIS_REPLY_ARRAY:
      value.type = Value::kArray;
      for (size_t i = 0; i < reply->elements; ++i) value.items.push_back(FromReply(reply->element[i]));
      return value;
    default: value.type = Value::kNil; return value;
  }
  value.text.assign(reply->str, reply->len);
  return value;
}

// Connects on first use and after a loss; 5 s timeouts (the routers answer within
// --command_timeout_ms=1000 or say UNAVAILABLE).
class Conn {
 public:
  explicit Conn(uint16_t port) : port_(port) {}
  ~Conn() { Drop(); }
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;

  Value Call(const Args& args) {
    Value sent = Append(args);
    return sent.lost() ? sent : Read();
  }
  // Queues one command (pipelining); Read() gets the replies in order.
  Value Append(const Args& args) {
    if (context_ == nullptr) {
      struct timeval timeout = {5, 0};
      context_ = redisConnectWithTimeout("127.0.0.1", port_, timeout);
      if (context_ == nullptr || context_->err) return Lost();
      redisSetTimeout(context_, timeout);
    }
    std::vector<const char*> argv;
    std::vector<size_t> lengths;
    for (const std::string& arg : args) {
      argv.push_back(arg.data());
      lengths.push_back(arg.size());
    }
    if (redisAppendCommandArgv(context_, static_cast<int>(argv.size()), argv.data(), lengths.data()) != REDIS_OK) {
      return Lost();
    }
    return Value{Value::kNil, "", {}};
  }
  Value Read() {
    void* raw = nullptr;
    if (context_ == nullptr || redisGetReply(context_, &raw) != REDIS_OK || raw == nullptr) return Lost();
    Value value = FromReply(static_cast<redisReply*>(raw));
    freeReplyObject(raw);
    return value;
  }

 private:
  Value Lost() {
    Value value{Value::kLost, context_ != nullptr ? context_->errstr : "no context", {}};
    Drop();
    return value;
  }
  void Drop() {
    if (context_ != nullptr) redisFree(context_);
    context_ = nullptr;
  }

  uint16_t port_;
  redisContext* context_ = nullptr;
};

// --- The workload's history ------------------------------------------------------

enum class Told { kOk, kRejected, kAborted, kUnknown };
const char* ToldName(Told told) {
  switch (told) {
    case Told::kOk: return "ok";
    case Told::kRejected: return "rejected";
    case Told::kAborted: return "aborted";
    case Told::kUnknown: return "unknown";
  }
  return "?";
}

enum class Final { kCommitted, kAborted, kNone, kInDoubt, kUnreadable };
const char* FinalName(Final state) {
  switch (state) {
    case Final::kCommitted: return "committed";
    case Final::kAborted: return "aborted";
    case Final::kNone: return "none";
    case Final::kInDoubt: return "in-doubt";
    case Final::kUnreadable: return "unreadable";
  }
  return "?";
}

struct Op {
  std::string txid;
  uint64_t from = 0, to = 0;
  int64_t amount = 0;
  std::string mode;  // tcc | saga
  bool cross = false;
  Told told = Told::kUnknown;
  std::string code;     // the rejection's code, when told rejected
  int attempts = 0;
  std::vector<std::string> replies;  // every reply, "router-N: text"
  Final final_state = Final::kUnreadable;
  std::string tx;  // the TX reply at the end
};

// Whether a reply leaves the outcome open (send the same txid again).
bool RetryReply(const Value& reply) {
  if (reply.lost()) return true;
  if (!reply.error()) return false;
  static const std::set<std::string> kRetry = {"UNAVAILABLE", "BUSY", "MOVED", "LEASED", "LOG_UNAVAILABLE"};
  return kRetry.contains(reply.Code());
}

struct Settings {
  int64_t seconds = EnvInt("WALLET_BANK_SECONDS", 12);
  int64_t clients = std::clamp<int64_t>(EnvInt("WALLET_BANK_CLIENTS", 6), 1, 64);
  int64_t accounts = std::clamp<int64_t>(EnvInt("WALLET_BANK_ACCOUNTS", 60), 2 * kShardCount, 3000);
  int64_t cross_percent = std::clamp<int64_t>(EnvInt("WALLET_BANK_CROSS_PERCENT", 80), 0, 100);
  bool chaos = EnvInt("WALLET_BANK_CHAOS", 1) != 0;
  int64_t kill_min_ms = std::max<int64_t>(EnvInt("WALLET_BANK_KILL_MIN_MS", 300), 0);
  int64_t kill_max_ms = std::max<int64_t>(EnvInt("WALLET_BANK_KILL_MAX_MS", 1500), 0);
  int64_t attempts = std::clamp<int64_t>(EnvInt("WALLET_BANK_ATTEMPTS", 12), 1, 1000);
  int64_t settle_s = std::max<int64_t>(EnvInt("WALLET_BANK_SETTLE_S", 60), 1);
  int64_t zk_session_ms = std::clamp<int64_t>(EnvInt("WALLET_BANK_ZK_SESSION_MS", 3000), 2000, 20000);
  bool require_cross = EnvInt("WALLET_BANK_REQUIRE_CROSS", 0) != 0;
  uint64_t seed = static_cast<uint64_t>(
      EnvInt("WALLET_BANK_SEED", static_cast<int64_t>(std::random_device{}() & 0x7fffffff)));
};

class BankTest : public ClusterTest {
 protected:
  BankTest() : ClusterTest(kShardCount, kPartitions) {}

  Args SessionFlag() const { return {absl::StrCat("--zk_session_timeout_ms=", settings_.zk_session_ms)}; }

  // Whether this build of wallet-router has the resolver flags (the cross-shard
  // executors); their absence means cross-shard transfers are refused.
  static bool RouterHasResolver(const std::string& dir) {
    absl::StatusOr<std::unique_ptr<ChildProcess>> help =
        ChildProcess::Start({WalletRouterBinary(), "--helpfull"}, dir + "/router-help.log");
    if (!help.ok()) return false;
    (void)(*help)->Wait(20s);
    return absl::StrContains((*help)->ReadLog(), "resolver_min_age_ms");
  }

  Args RouterFlags() const {
    Args flags = SessionFlag();
    if (resolver_) {
      flags.push_back("--resolver_min_age_ms=500");
      flags.push_back("--resolver_interval_ms=200");
    }
    return flags;
  }

  ServerProcess* StartRouter(const std::string& id, std::optional<uint16_t> port = std::nullopt) {
    Args flags = RouterFlags();
    if (port) flags.push_back(absl::StrCat("--port=", *port));
    ServerProcess* router = StartRouterProcess(id, flags);
    if (router != nullptr) {
      EXPECT_TRUE(Eventually([&] {
        return InfoNumber(CallOnce(router->port(), {"INFO", "router"}), "live_shards") == kShardCount;
      })) << id << " does not see every shard";
    }
    return router;
  }

  // SIGKILL to `name` (a shard or router id), reaped, then started again on its data
  // folder and port. False (with a test failure) when it did not come back.
  bool KillAndRestart(const std::string& name) {
    const bool shard = shards_.contains(name);
    ServerProcess* process = shard ? shards_.at(name).get() : routers_.at(name).get();
    const uint16_t port = process->port();
    if (!process->Running()) {
      ADD_FAILURE() << name << " (pid " << process->pid() << ") had already ended on its own: "
                    << process->process().exit_status()->ToString() << "; its log:\n"
                    << process->ReadLog();
    } else {
      EXPECT_TRUE(process->process().Signal(SIGKILL).ok());
      EXPECT_TRUE(process->process().Wait(10s).ok());
    }
    if (shard) return StartShard(name, Args{SessionFlag()[0], absl::StrCat("--port=", port)}) != nullptr;
    return StartRouter(name, port) != nullptr;
  }

  // One transfer, retried with the same txid on the other router until a final
  // answer or `attempts` sends.
  void RunTransfer(std::vector<std::unique_ptr<Conn>>& routers, int* router, Op* op) {
    Args args = {"TRANSFER", absl::StrCat(op->from), absl::StrCat(op->to), absl::StrCat(op->amount), "USD",
                 op->txid, "MODE", op->mode};
    auto backoff = 50ms;
    for (int attempt = 0; attempt < settings_.attempts; ++attempt) {
      ++op->attempts;
      const Value reply = routers[*router]->Call(args);
      op->replies.push_back(absl::StrCat("router-", *router, ": ", reply.ToString()));
      if (reply.type == Value::kStatus && reply.text == "OK") {
        op->told = Told::kOk;
        return;
      }
      if (!RetryReply(reply)) {
        if (reply.error() && reply.Code() == "ABORTED") {
          op->told = Told::kAborted;
        } else {
          op->told = Told::kRejected;
          op->code = reply.error() ? reply.Code() : "UNEXPECTED:" + reply.ToString();
        }
        return;
      }
      *router = (*router + 1) % static_cast<int>(routers.size());
      std::this_thread::sleep_for(backoff);
      backoff = std::min<std::chrono::milliseconds>(backoff * 2, 1000ms);
    }
    op->told = Told::kUnknown;
  }

  // TX txid through a router: the final state, retried while UNAVAILABLE.
  Final Classify(Conn& conn, const Value& first, Op* op) {
    Value reply = first;
    for (int i = 0; i < 20 && RetryReply(reply); ++i) {
      std::this_thread::sleep_for(200ms);
      reply = conn.Call({"TX", op->txid});
    }
    op->tx = reply.ToString();
    if (reply.type == Value::kNil) return Final::kNone;
    if (reply.type != Value::kArray) return Final::kUnreadable;
    std::map<std::string, std::string> fields = reply.Fields();
    const std::string kind = fields["kind"];
    if (kind == "local") return fields["state"] == "committed" ? Final::kCommitted : Final::kUnreadable;
    if (kind != "tcc" && kind != "saga") return Final::kUnreadable;
    auto phase = fields.find("row.phase");
    if (phase == fields.end()) {
      // The router answered with a shard that has a branch but not the row: ask
      // every shard for the row itself.
      ++tx_without_row_;
      for (const auto& [id, shard] : shards_) {
        Value row = CallValue(shard->port(), {"ROW.GET", op->txid});
        if (row.type == Value::kArray) {
          op->tx += absl::StrCat(" | ROW.GET on ", id, ": ", row.ToString());
          phase = (fields = row.Fields()).find("phase");
          break;
        }
      }
      if (phase == fields.end()) return Final::kUnreadable;
    }
    if (phase->second == "committed") return Final::kCommitted;
    if (phase->second == "aborted") return Final::kAborted;
    return Final::kInDoubt;
  }

  static Value CallValue(uint16_t port, const Args& args) { return Conn(port).Call(args); }

  // Σ of one AUDIT field over every shard (nullopt when a reply is unreadable).
  std::map<std::string, int64_t> AuditTotals(std::vector<std::string>* problems) {
    std::map<std::string, int64_t> totals;
    for (const auto& [id, shard] : shards_) {
      const Value audit = CallValue(shard->port(), {"AUDIT"});
      std::map<std::string, std::string> fields = audit.Fields();
      if (fields.empty()) problems->push_back(absl::StrCat(id, " AUDIT: ", audit.ToString()));
      for (const auto& [field, text] : fields) {
        int64_t value = 0;
        if (!absl::SimpleAtoi(text, &value)) {
          problems->push_back(absl::StrCat(id, " AUDIT ", field, "=", text));
          continue;
        }
        totals[field] += value;
        if (field == "conserved" && value != 1) {
          problems->push_back(absl::StrCat("(d) ", id, " AUDIT conserved ", text, ": ", audit.ToString()));
        }
      }
      std::printf("bank: %s AUDIT %s\n", id.c_str(), audit.ToString().c_str());
    }
    return totals;
  }

  // Every shard's unfinished rows (ROW.INDOUBT 0, and INFO keyspace open_rows).
  std::string Unfinished() {
    std::string out;
    for (const auto& [id, shard] : shards_) {
      const Value rows = CallValue(shard->port(), {"ROW.INDOUBT", "0", "COUNT", "10000"});
      const uint64_t open = InfoNumber(CallOnce(shard->port(), {"INFO", "keyspace"}), "open_rows");
      if (rows.type != Value::kArray || !rows.items.empty() || open != 0) {
        absl::StrAppend(&out, id, ": ROW.INDOUBT ", rows.ToString(), ", open_rows ", open, "; ");
      }
    }
    return out;
  }

  Settings settings_;
  bool resolver_ = false;
  std::atomic<int> tx_without_row_{0};
};

TEST_F(BankTest, ConcurrentTransfersUnderKillsConserveMoneyAndApplyEachCommittedTransferOnce) {
  const Settings& s = settings_;
  std::printf("bank: seed %llu (WALLET_BANK_SEED), %lld s of load, %lld clients, %lld accounts, %lld%% cross-shard, "
              "chaos %s\n",
              static_cast<unsigned long long>(s.seed), static_cast<long long>(s.seconds),
              static_cast<long long>(s.clients), static_cast<long long>(s.accounts),
              static_cast<long long>(s.cross_percent), s.chaos ? "on" : "off");
  resolver_ = RouterHasResolver(dir_->path());
  ASSERT_NO_FATAL_FAILURE(StartAllShards(SessionFlag()));
  const std::vector<std::string> router_ids = {"router-a", "router-b"};
  for (const std::string& id : router_ids) ASSERT_NE(StartRouter(id), nullptr);
  std::vector<uint16_t> router_ports;
  for (const std::string& id : router_ids) router_ports.push_back(routers_.at(id)->port());

  // Accounts, spread over every shard, each funded once.
  std::vector<std::vector<uint64_t>> by_shard(kShardCount);
  std::vector<uint64_t> accounts;
  std::map<uint64_t, int> shard_of;
  for (int i = 0; i < kShardCount; ++i) {
    const size_t count = static_cast<size_t>(s.accounts / kShardCount + (i < s.accounts % kShardCount ? 1 : 0));
    by_shard[i] = AccountsOn(cluster::ShardIdFor(i), count);
    ASSERT_EQ(by_shard[i].size(), count);
    for (uint64_t account : by_shard[i]) {
      accounts.push_back(account);
      shard_of[account] = i;
    }
  }
  std::map<uint64_t, int64_t> initial;
  int64_t deposited = 0;
  {
    Conn router(router_ports[0]);
    for (uint64_t account : accounts) {
      ASSERT_EQ(router.Call({"OPEN", absl::StrCat(account), "USD"}).ToString(), "+OK");
      ASSERT_EQ(router.Call({"DEPOSIT", absl::StrCat(account), absl::StrCat(kInitialBalance),
                             absl::StrCat("dep-", account)})
                    .ToString(),
                "+OK");
      initial[account] = kInitialBalance;
      deposited += kInitialBalance;
    }
  }

  // Does this router carry cross-shard transfers? A probe (recorded like any other).
  std::vector<Op> history;
  bool cross = false;
  {
    std::vector<std::unique_ptr<Conn>> conns;
    for (uint16_t port : router_ports) conns.push_back(std::make_unique<Conn>(port));
    int router = 0;
    Op probe;
    probe.txid = "bank-probe";
    probe.from = by_shard[0][0];
    probe.to = by_shard[1][0];
    probe.amount = 1;
    probe.mode = "tcc";
    probe.cross = true;
    RunTransfer(conns, &router, &probe);
    cross = probe.code != "CROSS_SHARD_UNSUPPORTED";
    if (cross) {
      EXPECT_EQ(probe.told, Told::kOk) << absl::StrJoin(probe.replies, "; ");
    }
    history.push_back(std::move(probe));
  }
  if (!cross) {
    std::printf("bank: NOTE the routers refuse cross-shard transfers (CROSS_SHARD_UNSUPPORTED): running the "
                "same-shard part only\n");
    EXPECT_FALSE(s.require_cross) << "WALLET_BANK_REQUIRE_CROSS=1 and the routers refuse cross-shard transfers";
  }
  std::printf("bank: %zu accounts funded (%lld each); routers %s; resolver flags %s\n", accounts.size(),
              static_cast<long long>(kInitialBalance), cross ? "carry cross-shard transfers" : "same-shard only",
              resolver_ ? "set" : "unknown to this wallet-router");

  // The load, on C threads; the chaos on this one (children must be started by the
  // thread that outlives them, harness/process.h).
  const auto load_start = Clock::now();
  const auto load_end = load_start + std::chrono::seconds(s.seconds);
  std::vector<std::vector<Op>> per_thread(static_cast<size_t>(s.clients));
  std::vector<std::thread> threads;
  for (int t = 0; t < s.clients; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(s.seed * 1000003 + static_cast<uint64_t>(t));
      std::vector<std::unique_ptr<Conn>> conns;
      for (uint16_t port : router_ports) conns.push_back(std::make_unique<Conn>(port));
      int router = t % static_cast<int>(conns.size());
      auto pick = [&](const std::vector<uint64_t>& from) { return from[rng() % from.size()]; };
      for (uint64_t n = 0; Clock::now() < load_end; ++n) {
        Op op;
        op.txid = absl::StrCat("bank-", s.seed, "-", t, "-", n);
        const int from_shard = static_cast<int>(rng() % kShardCount);
        op.cross = cross && static_cast<int64_t>(rng() % 100) < s.cross_percent;
        int to_shard = from_shard;
        if (op.cross) to_shard = (from_shard + 1 + static_cast<int>(rng() % (kShardCount - 1))) % kShardCount;
        op.from = pick(by_shard[from_shard]);
        do op.to = pick(by_shard[to_shard]);
        while (op.to == op.from);
        // Mostly small; one in 20 more than any account is likely to hold.
        op.amount = rng() % 20 == 0 ? 15'000 + static_cast<int64_t>(rng() % 10'000)
                                    : 1 + static_cast<int64_t>(rng() % 100);
        op.mode = rng() % 2 == 0 ? "tcc" : "saga";
        RunTransfer(conns, &router, &op);
        per_thread[t].push_back(std::move(op));
      }
    });
  }

  std::vector<std::string> kills;
  std::mt19937_64 chaos_rng(s.seed ^ 0x9e3779b97f4a7c15ull);
  std::vector<std::string> victims;
  for (const auto& [id, shard] : shards_) victims.push_back(id);
  for (const std::string& id : router_ids) victims.push_back(id);
  bool restarted_all = true;
  while (s.chaos && Clock::now() < load_end) {
    const int64_t span = std::max<int64_t>(s.kill_max_ms - s.kill_min_ms, 0);
    const auto pause =
        std::chrono::milliseconds(s.kill_min_ms + (span > 0 ? static_cast<int64_t>(chaos_rng() % span) : 0));
    const auto kill_at = Clock::now() + pause;
    while (Clock::now() < kill_at && Clock::now() < load_end) std::this_thread::sleep_for(10ms);
    if (Clock::now() >= load_end) break;
    const std::string victim = victims[chaos_rng() % victims.size()];
    const auto killed = Clock::now();
    const bool back = KillAndRestart(victim);
    const auto down_ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - killed).count();
    kills.push_back(absl::StrCat(victim, "@",
                                 std::chrono::duration_cast<std::chrono::milliseconds>(killed - load_start).count(),
                                 "ms(", down_ms, "ms down)"));
    if (!back) {
      restarted_all = false;
      break;
    }
  }
  for (std::thread& thread : threads) thread.join();
  ASSERT_TRUE(restarted_all) << "a killed process did not come back: " << absl::StrJoin(kills, " ");
  for (std::vector<Op>& ops : per_thread) {
    for (Op& op : ops) history.push_back(std::move(op));
  }
  std::printf("bank: load done: %zu transfers in %lld ms; %zu kills: %s\n", history.size(),
              static_cast<long long>(
                  std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - load_start).count()),
              kills.size(), absl::StrJoin(kills, " ").c_str());

  // Every process up (one that ended on its own is a failure, and is started again).
  for (const std::string& id : victims) {
    ServerProcess* process = shards_.contains(id) ? shards_.at(id).get() : routers_.at(id).get();
    if (!process->Running()) {
      ASSERT_TRUE(KillAndRestart(id));
    }
  }
  for (uint16_t port : router_ports) {
    EXPECT_TRUE(Eventually([&] { return InfoNumber(CallOnce(port, {"INFO", "router"}), "live_shards") == kShardCount; }));
  }

  // The resolvers finish every row in doubt (bounded); then it must stay so.
  const auto settle_start = Clock::now();
  std::string unfinished;
  const bool settled = Eventually(
      [&] {
        unfinished = Unfinished();
        return unfinished.empty();
      },
      std::chrono::seconds(s.settle_s));
  EXPECT_TRUE(settled) << "rows still unfinished after " << s.settle_s << " s: " << unfinished;
  std::this_thread::sleep_for(1s);
  unfinished = Unfinished();
  EXPECT_TRUE(unfinished.empty()) << "rows unfinished again: " << unfinished;
  std::printf("bank: settled in %lld ms\n",
              static_cast<long long>(
                  std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - settle_start).count()));
  {
    const Value indoubt = CallValue(router_ports[0], {"TX.INDOUBT"});
    if (indoubt.type == Value::kArray) {
      EXPECT_TRUE(indoubt.items.empty()) << "TX.INDOUBT through a router: " << indoubt.ToString();
    } else {
      std::printf("bank: TX.INDOUBT through a router: %s\n", indoubt.ToString().c_str());
    }
  }

  std::vector<std::string> problems;
  // (a), (c), (d): the shards' audits.
  std::map<std::string, int64_t> audit = AuditTotals(&problems);
  if (audit["available"] + audit["held"] != deposited) {
    problems.push_back(absl::StrCat("(a) AUDIT: Σ available+held = ", audit["available"] + audit["held"],
                                    ", Σ deposits = ", deposited));
  }
  if (audit["deposited"] != deposited || audit["withdrawn"] != 0) {
    problems.push_back(absl::StrCat("(a) AUDIT: deposited ", audit["deposited"], " withdrawn ", audit["withdrawn"],
                                    ", the test deposited ", deposited));
  }
  if (audit["moved_in"] != audit["moved_out"]) {
    problems.push_back(absl::StrCat("(a) AUDIT: Σ moved_in ", audit["moved_in"], " != Σ moved_out ",
                                    audit["moved_out"]));
  }
  if (audit["held"] != 0 || audit["pending_credit"] != 0) {
    problems.push_back(absl::StrCat("(c) AUDIT: Σ held ", audit["held"], ", Σ pending_credit ",
                                    audit["pending_credit"]));
  }

  // (a), (b), (c) per account: BALANCE through a router, ACCOUNT straight to the shard.
  std::map<uint64_t, int64_t> final_balance;
  int64_t sum_balance = 0;
  {
    Conn router(router_ports[1]);
    std::vector<std::unique_ptr<Conn>> shard_conns;
    for (int i = 0; i < kShardCount; ++i) shard_conns.push_back(std::make_unique<Conn>(ShardPort(cluster::ShardIdFor(i))));
    for (uint64_t account : accounts) {
      const Value balance = router.Call({"BALANCE", absl::StrCat(account)});
      const Value direct = shard_conns[shard_of[account]]->Call({"ACCOUNT", absl::StrCat(account)});
      std::map<std::string, std::string> fields = direct.Fields();
      int64_t available = 0, held = 0, pending = 0;
      if (balance.type != Value::kArray || balance.items.size() != 3 ||
          !absl::SimpleAtoi(balance.items[0].text, &available) || !absl::SimpleAtoi(balance.items[1].text, &held) ||
          !absl::SimpleAtoi(fields["pending_credit"], &pending)) {
        problems.push_back(absl::StrCat("account ", account, ": BALANCE ", balance.ToString(), ", ACCOUNT ",
                                        direct.ToString()));
        continue;
      }
      if (fields["available"] != absl::StrCat(available) || fields["held"] != absl::StrCat(held)) {
        problems.push_back(absl::StrCat("account ", account, ": BALANCE through a router ", balance.ToString(),
                                        " but ACCOUNT on its shard ", direct.ToString()));
      }
      if (available < 0 || held < 0 || pending < 0) {
        problems.push_back(absl::StrCat("(b) account ", account, " negative: ", direct.ToString()));
      }
      if (held != 0 || pending != 0) {
        problems.push_back(absl::StrCat("(c) account ", account, " held/pending left: ", direct.ToString()));
      }
      final_balance[account] = available + held;
      sum_balance += available + held;
    }
  }
  if (sum_balance != deposited) {
    problems.push_back(absl::StrCat("(a) Σ BALANCE available+held = ", sum_balance, ", Σ deposits = ", deposited));
  }

  // (e): every txid's final state against what its client was told.
  std::map<std::string, int> told_count, final_count, code_count;
  int cross_count = 0, tcc_count = 0, retried = 0;
  {
    Conn router(router_ports[0]);
    constexpr size_t kBatch = 256;
    for (size_t begin = 0; begin < history.size(); begin += kBatch) {
      const size_t end = std::min(history.size(), begin + kBatch);
      for (size_t i = begin; i < end; ++i) router.Append({"TX", history[i].txid});
      for (size_t i = begin; i < end; ++i) {
        Value reply = router.Read();
        history[i].final_state = Classify(router, reply, &history[i]);
      }
    }
  }
  std::map<uint64_t, int64_t> replayed = initial;
  int shown = 0;
  for (const Op& op : history) {
    ++told_count[ToldName(op.told)];
    ++final_count[FinalName(op.final_state)];
    if (op.told == Told::kRejected) ++code_count[op.code];
    cross_count += op.cross ? 1 : 0;
    tcc_count += op.mode == "tcc" ? 1 : 0;
    retried += op.attempts > 1 ? 1 : 0;
    std::string wrong;
    if (op.final_state == Final::kInDoubt || op.final_state == Final::kUnreadable) {
      wrong = "(e) not finished / unreadable";
    } else if (op.told == Told::kOk && op.final_state != Final::kCommitted) {
      wrong = "(e) told OK but not committed";
    } else if ((op.told == Told::kRejected || op.told == Told::kAborted) && op.final_state == Final::kCommitted) {
      wrong = "(e) told rejected/ABORTED but committed";
    }
    if (!wrong.empty()) {
      problems.push_back(absl::StrCat(wrong, ": ", op.txid));
      if (shown++ < 20) {
        std::printf("bank: %s: txid %s %llu->%llu %lld %s%s told %s%s%s; replies: %s; TX: %s\n", wrong.c_str(),
                    op.txid.c_str(), static_cast<unsigned long long>(op.from),
                    static_cast<unsigned long long>(op.to), static_cast<long long>(op.amount), op.mode.c_str(),
                    op.cross ? " cross" : " same-shard", ToldName(op.told), op.code.empty() ? "" : " ",
                    op.code.c_str(), absl::StrJoin(op.replies, " | ").c_str(), op.tx.c_str());
      }
    }
    if (op.final_state == Final::kCommitted) {
      replayed[op.from] -= op.amount;
      replayed[op.to] += op.amount;
    }
  }

  // (f): the committed transfers, replayed, give every final balance.
  for (uint64_t account : accounts) {
    if (final_balance.contains(account) && replayed[account] != final_balance[account]) {
      problems.push_back(absl::StrCat("(f) account ", account, ": replayed ", replayed[account], ", final ",
                                      final_balance[account]));
    }
  }

  // The routers' own counters (since each one's last start): the resolvers' work,
  // and the executors' invariant alarms, which must never go off.
  std::string router_counters;
  for (size_t r = 0; r < router_ports.size(); ++r) {
    const std::string info = CallOnce(router_ports[r], {"INFO", "transactions"});
    absl::StrAppend(&router_counters, r == 0 ? "" : "; ", router_ids[r], " resolver_claimed ",
                    InfoNumber(info, "resolver_claimed"), " resolver_finished ", InfoNumber(info, "resolver_finished"),
                    " resumed ", InfoNumber(info, "resumed"), " invariant_alarms ",
                    InfoNumber(info, "invariant_alarms"));
    if (InfoNumber(info, "invariant_alarms") != 0) {
      problems.push_back(absl::StrCat(router_ids[r], " INFO transactions: invariant_alarms ",
                                      InfoField(info, "invariant_alarms"), " (see its log)"));
    }
  }
  std::printf("bank: routers: %s\n", router_counters.c_str());

  auto counts = [](const std::map<std::string, int>& m) {
    std::vector<std::string> parts;
    for (const auto& [key, value] : m) parts.push_back(absl::StrCat(key, "=", value));
    return absl::StrJoin(parts, " ");
  };
  std::printf("bank: SUMMARY %zu transfers (%d cross-shard, %d tcc), told: %s; rejected codes: %s; final: %s; "
              "retried %d; kills %zu; TX answered without the row %d; problems %zu\n",
              history.size(), cross_count, tcc_count, counts(told_count).c_str(), counts(code_count).c_str(),
              counts(final_count).c_str(), retried, kills.size(), tx_without_row_.load(), problems.size());
  std::fflush(stdout);
  EXPECT_TRUE(problems.empty()) << problems.size() << " problems (seed " << s.seed << "):\n  "
                                << absl::StrJoin(problems.begin(),
                                                 problems.begin() + std::min<size_t>(problems.size(), 60), "\n  ");
}

}  // namespace
}  // namespace wallet::test
