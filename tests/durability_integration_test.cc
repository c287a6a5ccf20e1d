// durability_integration_test.cc — the real wallet-shard with a data folder, killed
// with SIGKILL and restarted, its log damaged, its disk failing or full, and the
// wallet-history tool reading what it wrote.
//
// Every test starts its own shards (--port=0 --ready_file, see harness/process.h) in a
// private temporary directory and talks to them over hiredis. A "crash" is SIGKILL to
// the shard's pid: no destructor, no flush. What a restarted shard must hold is worked
// out here from the replies the clients got (docs/durability.md):
//   - every change answered +OK is there (TX shows it, before anything is re-sent);
//   - a change that got no reply is wholly there or not at all;
//   - balances and audit totals are exactly the fold of the changes that are there,
//     and money is conserved (deposited - withdrawn = available + held).
//
// Nothing here asserts on timing. Waits poll with a deadline that bounds a failure;
// the few sleeps choose a random moment to crash, never prove anything.
//
// WALLET_CRASH_ITERATIONS (default 6) sets how many kill/restart rounds
// CrashRecoveryKeepsEveryAcknowledgedChange runs; WALLET_CRASH_SEED replays the
// random choices (operations, crash moments) of an earlier run. DiskFullOnTmpfs
// mounts a 4 MiB tmpfs (root or CAP_SYS_ADMIN) and is skipped where it cannot.
#include <errno.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "harness/process.h"
#include "shard/log_format.h"

namespace wallet::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using Command = std::vector<std::string>;

constexpr std::chrono::milliseconds kIoTimeout = 15s;  // bounds a hang, never a success
constexpr std::chrono::milliseconds kPollSlice = 5ms;

// ---------------------------------------------------------------------------
// Replies and a hiredis connection with bounded waits.

// A reply copied out of hiredis. kLost: no reply (the connection failed or closed,
// or the wait ended first; `text` says which).
struct Reply {
  static constexpr int kLost = -1;
  int type = kLost;  // REDIS_REPLY_* or kLost
  std::string text;  // status, error and bulk text; kLost: why
  long long integer = 0;
  std::vector<Reply> elements;

  bool IsOk() const { return type == REDIS_REPLY_STATUS && text == "OK"; }
  bool IsNil() const { return type == REDIS_REPLY_NIL; }
  bool IsLost() const { return type == kLost; }
  // The first word of an error reply, "" for anything else.
  std::string ErrorCode() const {
    return type == REDIS_REPLY_ERROR ? text.substr(0, text.find(' ')) : std::string();
  }
  // The value of `name` in a name/value array (TX, AUDIT), integers in decimal.
  std::string Field(const std::string& name) const {
    for (size_t i = 0; i + 1 < elements.size(); i += 2) {
      if (elements[i].text != name) continue;
      const Reply& value = elements[i + 1];
      return value.type == REDIS_REPLY_INTEGER ? absl::StrCat(value.integer) : value.text;
    }
    return "";
  }
  // "+OK", "-CODE message", ":5", "\"USD\"", "(nil)", "[:1, :0, \"USD\"]", "(lost: why)".
  std::string ToString() const {
    switch (type) {
      case REDIS_REPLY_STATUS: return "+" + text;
      case REDIS_REPLY_ERROR: return "-" + text;
      case REDIS_REPLY_INTEGER: return absl::StrCat(":", integer);
      case REDIS_REPLY_STRING: return absl::StrCat("\"", text, "\"");
      case REDIS_REPLY_NIL: return "(nil)";
      case REDIS_REPLY_ARRAY: {
        std::string out;
        for (const Reply& element : elements) absl::StrAppend(&out, out.empty() ? "" : ", ", element.ToString());
        return absl::StrCat("[", out, "]");
      }
      default: return absl::StrCat("(lost: ", text, ")");
    }
  }

  static Reply Lost(std::string why) {
    Reply reply;
    reply.text = std::move(why);
    return reply;
  }
  static Reply Copy(const redisReply* from) {
    Reply reply;
    reply.type = from->type;
    reply.integer = from->integer;
    if (from->str != nullptr) reply.text.assign(from->str, from->len);
    for (size_t i = 0; i < from->elements; ++i) reply.elements.push_back(Copy(from->element[i]));
    return reply;
  }
};

// BALANCE's reply for an account of this test's currency with nothing held.
std::string UsdBalance(int64_t available) { return absl::StrCat("[:", available, ", :0, \"USD\"]"); }

// One connection. Send() writes without waiting for replies; Receive() waits at most
// the given time, and a wait that ends leaves the stream intact (a later Receive()
// gets the reply), so a test can tell "no reply yet" from "connection lost".
// Not thread-safe: one thread per Client.
class Client {
 public:
  // Null (with *error set) when the shard cannot be reached.
  static std::unique_ptr<Client> Connect(uint16_t port, std::string* error) {
    const struct timeval timeout = {15, 0};  // blocking reads and writes never hang a test
    std::unique_ptr<Client> client(new Client(redisConnectWithTimeout("127.0.0.1", port, timeout)));
    redisContext* context = client->context_;
    if (context != nullptr && context->err == 0 && redisSetTimeout(context, timeout) == REDIS_OK) return client;
    *error = context == nullptr ? std::string("out of memory")
                                : absl::StrCat("connect to 127.0.0.1:", port, ": ", context->errstr);
    return nullptr;
  }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  ~Client() {
    if (context_ != nullptr) redisFree(context_);
  }

  // Adds a command to the output buffer; Flush() writes the buffer.
  void Queue(const Command& command) {
    std::vector<const char*> argv(command.size());
    std::vector<size_t> sizes(command.size());
    for (size_t i = 0; i < command.size(); ++i) {
      argv[i] = command[i].c_str();
      sizes[i] = command[i].size();
    }
    redisAppendCommandArgv(context_, static_cast<int>(argv.size()), argv.data(), sizes.data());
  }
  bool Flush() {
    int done = 0;
    while (done == 0) {
      if (redisBufferWrite(context_, &done) != REDIS_OK) return false;
    }
    return true;
  }
  bool Send(const Command& command) {
    Queue(command);
    return Flush();
  }

  Reply Receive(std::chrono::milliseconds timeout = kIoTimeout) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      void* raw = nullptr;
      if (redisGetReplyFromReader(context_, &raw) != REDIS_OK) return Reply::Lost(context_->errstr);
      if (raw != nullptr) {
        Reply reply = Reply::Copy(static_cast<redisReply*>(raw));
        freeReplyObject(raw);
        return reply;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) return Reply::Lost(absl::StrCat("no reply within ", timeout.count(), " ms"));
      struct pollfd readable = {context_->fd, POLLIN, 0};
      const int ready = poll(&readable, 1, static_cast<int>(left.count()));
      if (ready < 0 && errno != EINTR) return Reply::Lost(std::strerror(errno));
      if (ready > 0 && redisBufferRead(context_) != REDIS_OK) return Reply::Lost(context_->errstr);
    }
  }
  // True once the connection failed or was closed (a Receive() that only timed out
  // leaves it usable).
  bool broken() const { return context_->err != 0; }

  Reply Call(const Command& command) {
    if (!Send(command)) return Reply::Lost(context_->errstr);
    return Receive();
  }
  // Pipelines `commands`, `depth` in flight at a time; the replies in order.
  std::vector<Reply> CallAll(const std::vector<Command>& commands, size_t depth = 1000) {
    std::vector<Reply> replies;
    replies.reserve(commands.size());
    for (size_t begin = 0; begin < commands.size(); begin += depth) {
      const size_t end = std::min(commands.size(), begin + depth);
      for (size_t i = begin; i < end; ++i) Queue(commands[i]);
      const bool flushed = Flush();
      for (size_t i = begin; i < end; ++i) replies.push_back(flushed ? Receive() : Reply::Lost(context_->errstr));
    }
    return replies;
  }

 private:
  explicit Client(redisContext* context) : context_(context) {}
  redisContext* context_;
};

// INFO's "name:value" lines.
std::map<std::string, std::string> ParseInfo(const std::string& text) {
  std::map<std::string, std::string> fields;
  for (absl::string_view line : absl::StrSplit(text, "\r\n")) {
    if (line.empty() || line[0] == '#' || !absl::StrContains(line, ':')) continue;
    std::pair<std::string, std::string> field = absl::StrSplit(line, absl::MaxSplits(':', 1));
    fields.insert(std::move(field));
  }
  return fields;
}

std::map<std::string, std::string> Info(Client& client, const std::string& section) {
  return ParseInfo(client.Call({"INFO", section}).text);
}

int64_t InfoNumber(const std::map<std::string, std::string>& info, const std::string& name) {
  auto it = info.find(name);
  int64_t value = -1;
  if (it == info.end() || !absl::SimpleAtoi(it->second, &value)) return -1;
  return value;
}

// Polls `condition` until it holds (true) or kIoTimeout passed (false).
template <typename Condition>
bool Eventually(Condition condition) {
  const auto deadline = Clock::now() + kIoTimeout;
  while (!condition()) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(kPollSlice);
  }
  return true;
}

// Expects every reply to be +OK; reports the first that is not.
bool AllOk(const std::vector<Command>& commands, const std::vector<Reply>& replies) {
  for (size_t i = 0; i < replies.size(); ++i) {
    if (!replies[i].IsOk()) {
      ADD_FAILURE() << absl::StrJoin(commands[i], " ") << " -> " << replies[i].ToString();
      return false;
    }
  }
  return true;
}

// ---------------------------------------------------------------------------
// Operations and the balances they imply.

enum class Kind { kDeposit, kWithdraw, kTransfer };

struct Op {
  Kind kind = Kind::kTransfer;
  uint64_t account = 0;  // the payer of a transfer
  uint64_t to = 0;       // transfers only
  int64_t amount = 0;
  std::string txid;

  Command ToCommand() const {
    switch (kind) {
      case Kind::kDeposit: return {"DEPOSIT", absl::StrCat(account), absl::StrCat(amount), txid};
      case Kind::kWithdraw: return {"WITHDRAW", absl::StrCat(account), absl::StrCat(amount), txid};
      case Kind::kTransfer: break;
    }
    return {"TRANSFER", absl::StrCat(account), absl::StrCat(to), absl::StrCat(amount), "USD", txid};
  }
  // Whether a TX reply describes this operation, committed.
  bool DescribedBy(const Reply& tx) const {
    static constexpr const char* kTypes[] = {"DEPOSIT", "WITHDRAW", "TRANSFER"};
    const bool transfer = kind == Kind::kTransfer;
    return tx.Field("kind") == "local" && tx.Field("state") == "committed" &&
           tx.Field("type") == kTypes[static_cast<int>(kind)] && tx.Field("amount") == absl::StrCat(amount) &&
           tx.Field(transfer ? "from" : "account") == absl::StrCat(account) &&
           (!transfer || tx.Field("to") == absl::StrCat(to));
  }
  bool Touches(uint64_t id) const { return account == id || (kind == Kind::kTransfer && to == id); }
};

// What the shard must hold: the fold of the operations applied.
struct Book {
  std::map<uint64_t, int64_t> available;  // every open account
  int64_t deposited = 0;
  int64_t withdrawn = 0;

  void Apply(const Op& op) {
    switch (op.kind) {
      case Kind::kDeposit:
        available[op.account] += op.amount;
        deposited += op.amount;
        break;
      case Kind::kWithdraw:
        available[op.account] -= op.amount;
        withdrawn += op.amount;
        break;
      case Kind::kTransfer:
        available[op.account] -= op.amount;
        available[op.to] += op.amount;
        break;
    }
  }
};

// OPEN and a first DEPOSIT ("fund-<id>") for accounts 1..count, entered in *book.
std::vector<Command> OpenAndFund(int count, int64_t amount, Book* book) {
  std::vector<Command> commands;
  for (int id = 1; id <= count; ++id) {
    commands.push_back({"OPEN", absl::StrCat(id), "USD"});
    Op deposit{Kind::kDeposit, static_cast<uint64_t>(id), 0, amount, absl::StrCat("fund-", id)};
    commands.push_back(deposit.ToCommand());
    book->available[deposit.account] = 0;
    book->Apply(deposit);
  }
  return commands;
}

// A random transfer between two of accounts 1..accounts (never enough to drain a
// funded account in the counts these tests send).
Op RandomTransfer(std::mt19937_64& random, int accounts, std::string txid) {
  Op op{Kind::kTransfer, random() % accounts + 1, random() % (accounts - 1) + 1,
        static_cast<int64_t>(random() % 1000) + 1, std::move(txid)};
  if (op.to >= op.account) ++op.to;
  return op;
}

// Mostly transfers, some deposits and withdrawals.
Op RandomOp(std::mt19937_64& random, int accounts, std::string txid) {
  Op op = RandomTransfer(random, accounts, std::move(txid));
  const uint64_t dice = random() % 10;
  if (dice == 0) op.kind = Kind::kDeposit;
  if (dice == 1) op.kind = Kind::kWithdraw;
  return op;
}

std::vector<Command> Commands(const std::vector<Op>& ops) {
  std::vector<Command> commands;
  for (const Op& op : ops) commands.push_back(op.ToCommand());
  return commands;
}

// Expects the shard's balances and audit totals to be exactly what `book` says, and
// AUDIT's own numbers to conserve money.
bool ExpectShardHolds(Client& client, const Book& book) {
  std::vector<Command> queries;
  for (const auto& [id, available] : book.available) queries.push_back({"BALANCE", absl::StrCat(id)});
  const std::vector<Reply> replies = client.CallAll(queries);
  std::string mismatches;
  int count = 0;
  auto expected = book.available.begin();
  for (size_t i = 0; i < replies.size(); ++i, ++expected) {
    if (replies[i].ToString() == UsdBalance(expected->second)) continue;
    if (++count <= 10) {
      absl::StrAppend(&mismatches, "\n  account ", expected->first, ": ", replies[i].ToString(), ", expected ",
                      UsdBalance(expected->second));
    }
  }
  const Reply audit = client.Call({"AUDIT"});
  int64_t deposited = 0, withdrawn = 0, available = 0, held = 0;
  const bool parsed = absl::SimpleAtoi(audit.Field("deposited"), &deposited) &&
                      absl::SimpleAtoi(audit.Field("withdrawn"), &withdrawn) &&
                      absl::SimpleAtoi(audit.Field("available"), &available) &&
                      absl::SimpleAtoi(audit.Field("held"), &held);
  if (!parsed || deposited != book.deposited || withdrawn != book.withdrawn || held != 0 ||
      available + held != deposited - withdrawn || audit.Field("conserved") != "1") {
    ++count;
    absl::StrAppend(&mismatches, "\n  AUDIT ", audit.ToString(), "; expected deposited ", book.deposited,
                    ", withdrawn ", book.withdrawn, ", available ", book.deposited - book.withdrawn, ", held 0");
  }
  if (count == 0) return true;
  ADD_FAILURE() << count << " mismatch(es) with the state the replies imply:" << mismatches;
  return false;
}

// Expects TX to show every one of `ops` as committed, as sent.
bool AllPresent(Client& client, const std::vector<Op>& ops) {
  std::vector<Command> queries;
  for (const Op& op : ops) queries.push_back({"TX", op.txid});
  const std::vector<Reply> txs = client.CallAll(queries);
  std::string missing;
  int count = 0;
  for (size_t i = 0; i < ops.size(); ++i) {
    if (ops[i].DescribedBy(txs[i])) continue;
    if (++count <= 10) absl::StrAppend(&missing, "\n  ", ops[i].txid, ": TX ", txs[i].ToString());
  }
  if (count == 0) return true;
  ADD_FAILURE() << count << " of " << ops.size() << " acknowledged operation(s) missing:" << missing;
  return false;
}

// Polls INFO persistence until the event log works again and no reply is held.
bool WaitForLogRecovered(Client& client) {
  std::map<std::string, std::string> info;
  if (Eventually([&] {
        info = Info(client, "persistence");
        return info["log_ok"] == "1" && info["held_connections"] == "0";
      })) {
    return true;
  }
  ADD_FAILURE() << "log_ok " << info["log_ok"] << ", held_connections " << info["held_connections"]
                << ", log_error " << info["log_error"];
  return false;
}

// INFO persistence through `client` shows the event log failed with `error_number`
// and replies held.
void ExpectLogFailedWith(Client& client, int error_number) {
  std::map<std::string, std::string> info = Info(client, "persistence");
  EXPECT_EQ(info["log_ok"], "0");
  EXPECT_TRUE(absl::StrContains(info["log_error"], std::strerror(error_number))) << info["log_error"];
  EXPECT_GE(InfoNumber(info, "held_connections"), 1);
}

// While the log is failed: a read is answered; `refused` gets LOG_UNAVAILABLE and
// leaves no record; no snapshot starts.
void ExpectReadOnly(Client& client, const Op& refused) {
  EXPECT_EQ(client.Call({"BALANCE", absl::StrCat(refused.account)}).type, REDIS_REPLY_ARRAY);
  EXPECT_EQ(client.Call(refused.ToCommand()).ErrorCode(), "LOG_UNAVAILABLE");
  EXPECT_TRUE(client.Call({"TX", refused.txid}).IsNil());
  EXPECT_EQ(client.Call({"SNAPSHOT"}).ErrorCode(), "LOG_UNAVAILABLE");
}

// Starts a snapshot (waiting out one already running) and waits until it is in
// place. With no traffic meanwhile it covers every event logged before.
bool SnapshotAndWait(Client& client) {
  std::map<std::string, std::string> before;
  Reply reply;
  const bool accepted = Eventually([&] {
    before = Info(client, "persistence");
    reply = client.Call({"SNAPSHOT"});
    return reply.ErrorCode() != "BUSY";
  });
  if (!accepted || reply.type != REDIS_REPLY_STATUS) {
    ADD_FAILURE() << "SNAPSHOT -> " << reply.ToString();
    return false;
  }
  // The snapshot starts at the end of the SNAPSHOT's loop turn, so from the next
  // INFO on it shows as in progress until it ended.
  std::map<std::string, std::string> info;
  Eventually([&] {
    info = Info(client, "persistence");
    return info["snapshot_in_progress"] == "0";
  });
  if (InfoNumber(info, "snapshots_taken") <= InfoNumber(before, "snapshots_taken") ||
      InfoNumber(info, "snapshot_last_seq") < InfoNumber(before, "log_last_seq")) {
    ADD_FAILURE() << "no snapshot of seq " << before["log_last_seq"] << " completed: snapshot_in_progress "
                  << info["snapshot_in_progress"] << ", snapshot_last_seq " << info["snapshot_last_seq"]
                  << ", snapshot_last_error " << info["snapshot_last_error"];
    return false;
  }
  return true;
}

// ---------------------------------------------------------------------------
// Files of the data folder.

std::vector<std::string> SegmentPaths(const std::string& data_dir) {
  std::vector<std::string> paths;
  absl::StatusOr<std::vector<shard::logfmt::SegmentFile>> segments = shard::logfmt::ListSegments(data_dir);
  EXPECT_TRUE(segments.ok()) << segments.status();
  if (segments.ok()) {
    for (const shard::logfmt::SegmentFile& segment : *segments) paths.push_back(segment.path);
  }
  return paths;
}

uint64_t FileSize(const std::string& path) {
  std::error_code error;
  const uintmax_t size = std::filesystem::file_size(path, error);
  EXPECT_FALSE(error) << path << ": " << error.message();
  return error ? 0 : static_cast<uint64_t>(size);
}

bool AppendToFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::app);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return static_cast<bool>(out.flush());
}

// Byte offsets of the records of a segment file's contents (after its file header).
std::vector<uint64_t> RecordOffsets(const std::string& bytes) {
  std::vector<uint64_t> offsets;
  uint64_t offset = shard::logfmt::kFileHeaderBytes;
  while (offset + shard::logfmt::kRecordHeaderBytes <= bytes.size()) {
    uint32_t length = 0;
    std::memcpy(&length, bytes.data() + offset + 4, sizeof(length));  // crc:u32 length:u32 ...
    offsets.push_back(offset);
    offset += shard::logfmt::kRecordHeaderBytes + length;
  }
  return offsets;
}

bool WriteWholeFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return static_cast<bool>(out.flush());
}

int64_t WallClockMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

uint64_t EnvNumber(const char* name, uint64_t fallback) {
  const char* text = std::getenv(name);
  uint64_t value = 0;
  return text != nullptr && absl::SimpleAtoi(text, &value) ? value : fallback;
}

bool HasLineStartingWith(const std::string& text, const std::string& prefix) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::StartsWith(line, prefix)) return true;
  }
  return false;
}

// A tmpfs mounted for one test, always unmounted when the object goes (even when the
// test fails); stop every process using it first.
class TmpfsMount {
 public:
  static absl::StatusOr<std::unique_ptr<TmpfsMount>> Create(const std::string& path, const std::string& size) {
    if (mkdir(path.c_str(), 0700) != 0) {
      return absl::InternalError(absl::StrCat("mkdir ", path, ": ", std::strerror(errno)));
    }
    const std::string options = "size=" + size;
    if (mount("tmpfs", path.c_str(), "tmpfs", 0, options.c_str()) != 0) {
      return absl::PermissionDeniedError(
          absl::StrCat("mount -t tmpfs -o ", options, " tmpfs ", path, ": ", std::strerror(errno)));
    }
    return std::unique_ptr<TmpfsMount>(new TmpfsMount(path));
  }
  TmpfsMount(const TmpfsMount&) = delete;
  TmpfsMount& operator=(const TmpfsMount&) = delete;
  ~TmpfsMount() {
    if (umount2(path_.c_str(), 0) == 0) return;
    std::fprintf(stderr, "umount %s: %s; detaching it\n", path_.c_str(), std::strerror(errno));
    umount2(path_.c_str(), MNT_DETACH);
  }

  const std::string& path() const { return path_; }
  uint64_t FreeBytes() const {
    struct statvfs stats;
    if (statvfs(path_.c_str(), &stats) != 0) return 0;
    return static_cast<uint64_t>(stats.f_bavail) * stats.f_frsize;
  }

 private:
  explicit TmpfsMount(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

// Writes `bytes` bytes (real pages, not a sparse file) to `path`.
bool WriteFiller(const std::string& path, uint64_t bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  const std::string chunk(64 << 10, 'f');
  while (bytes > 0 && out) {
    const uint64_t now = std::min<uint64_t>(bytes, chunk.size());
    out.write(chunk.data(), static_cast<std::streamsize>(now));
    bytes -= now;
  }
  return static_cast<bool>(out.flush());
}

// ---------------------------------------------------------------------------
// The fixture: a temporary directory; shards and tool runs inside it.

class DurabilityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { signal(SIGPIPE, SIG_IGN); }

  void SetUp() override {
    absl::StatusOr<TempDir> dir = TempDir::Create("durability");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_.emplace(std::move(*dir));
  }

  std::string DataDir() const { return dir_->File("data"); }

  // Starts a shard with `flags` as a new process ("shard-<n>": its own ready file and
  // log) and connects client_ to it.
  void Start(const std::vector<std::string>& flags) {
    absl::StatusOr<std::unique_ptr<ServerProcess>> shard =
        ServerProcess::Start(*dir_, absl::StrCat("shard-", ++shard_starts_), WalletShardBinary(), flags);
    ASSERT_TRUE(shard.ok()) << shard.status();
    shard_ = std::move(*shard);
    client_ = Connect();
    ASSERT_NE(client_, nullptr);
  }

  // A shard process that is expected not to start: returns how it ended and its log.
  std::pair<ExitStatus, std::string> StartShardExpectingExit(const std::vector<std::string>& flags) {
    const std::string name = absl::StrCat("refused-", ++shard_starts_);
    std::vector<std::string> argv = {WalletShardBinary(), "--port=0", "--ready_file=" + dir_->File(name + ".port")};
    argv.insert(argv.end(), flags.begin(), flags.end());
    return RunToEnd(argv, dir_->File(name + ".log"));
  }

  // Runs wallet-history with `args`; returns how it ended and what it printed.
  std::pair<ExitStatus, std::string> History(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {WalletHistoryBinary()};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunToEnd(argv, dir_->File(absl::StrCat("history-", ++history_runs_, ".log")));
  }

  static std::pair<ExitStatus, std::string> RunToEnd(const std::vector<std::string>& argv, const std::string& log) {
    absl::StatusOr<std::unique_ptr<ChildProcess>> child = ChildProcess::Start(argv, log);
    EXPECT_TRUE(child.ok()) << child.status();
    if (!child.ok()) return {ExitStatus{}, ""};
    absl::StatusOr<ExitStatus> status = (*child)->Wait(kIoTimeout);
    EXPECT_TRUE(status.ok()) << status.status();
    return {status.ok() ? *status : ExitStatus{}, (*child)->ReadLog()};
  }

  // Another connection to the running shard.
  std::unique_ptr<Client> Connect() {
    std::string error;
    std::unique_ptr<Client> client = Client::Connect(shard_->port(), &error);
    EXPECT_NE(client, nullptr) << error;
    return client;
  }

  // Whether INFO persistence shows the event log failed with replies held. Asked on
  // a new connection each time: a request that shares the loop turn whose write
  // fails is held with that turn (every reply of it waits for the log), and such a
  // connection is left behind; so is one that got no reply within a short wait.
  bool LogFailedNow() {
    std::unique_ptr<Client> observer = Connect();
    if (observer == nullptr || !observer->Send({"INFO", "persistence"})) return false;
    const Reply reply = observer->Receive(200ms);
    if (reply.IsLost()) return false;
    std::map<std::string, std::string> info = ParseInfo(reply.text);
    return info["log_ok"] == "0" && InfoNumber(info, "held_connections") >= 1;
  }

  // Starts a shard with `flags` (which must enable DEBUG), opens accounts
  // 1..accounts funded with 10,000 each (recorded in *book), connects two more
  // clients and makes every event log write fail (DEBUG LOGFAULT ENOSPC).
  void StartWithLogFault(const std::vector<std::string>& flags, int accounts, std::unique_ptr<Client>* first,
                         std::unique_ptr<Client>* second, Book* book) {
    ASSERT_NO_FATAL_FAILURE(Start(flags));
    *first = Connect();
    *second = Connect();
    ASSERT_TRUE(*first != nullptr && *second != nullptr);
    const std::vector<Command> setup = OpenAndFund(accounts, 10'000, book);
    ASSERT_TRUE(AllOk(setup, client_->CallAll(setup)));
    ASSERT_TRUE(client_->Call({"DEBUG", "LOGFAULT", "ENOSPC"}).IsOk());
  }

  // SIGKILL to the shard's pid (nothing flushed, no destructor runs), then reaped.
  void Crash() {
    client_.reset();
    ASSERT_TRUE(shard_->process().Signal(SIGKILL).ok());
    absl::StatusOr<ExitStatus> status = shard_->process().Wait(kIoTimeout);
    ASSERT_TRUE(status.ok()) << status.status();
    // Anything else means the shard died on its own before the kill.
    EXPECT_TRUE(status->signaled && status->signal == SIGKILL) << status->ToString();
  }

  // SIGTERM; the shard must exit with status 0.
  void Stop() {
    client_.reset();
    const ExitStatus status = shard_->Stop();
    EXPECT_TRUE(status.success()) << "wallet-shard stopped with " << status.ToString() << "; its log:\n"
                                  << shard_->ReadLog();
  }

  // `op` is accepted, and it and all of *book survive a clean stop and restart.
  void ExpectKeptAcrossRestart(const Op& op, Book* book, const std::vector<std::string>& flags) {
    EXPECT_TRUE(client_->Call(op.ToCommand()).IsOk()) << op.txid;
    book->Apply(op);
    Stop();
    ASSERT_NO_FATAL_FAILURE(Start(flags));
    EXPECT_TRUE(ExpectShardHolds(*client_, *book));
    EXPECT_TRUE(AllPresent(*client_, {op}));
    Stop();
  }

  // wallet-history verify on the data folder: exit status 0 and an "OK: " line.
  void ExpectVerifyOk() {
    auto [status, output] = History({"verify", "--data_dir=" + DataDir()});
    EXPECT_TRUE(status.success()) << status.ToString() << "\n" << output;
    EXPECT_TRUE(HasLineStartingWith(output, "OK: ")) << output;
  }

  // Destroyed in reverse: the client, then the shard (stopped), then the tmpfs
  // (unmounted), then the directory (removed).
  std::optional<TempDir> dir_;
  std::unique_ptr<TmpfsMount> tmpfs_;
  std::unique_ptr<ServerProcess> shard_;
  std::unique_ptr<Client> client_;
  int shard_starts_ = 0;
  int history_runs_ = 0;
};

// ---------------------------------------------------------------------------
// Crash recovery.

constexpr int kCrashAccounts = 100;
// Little enough that some payers run dry in a longer run (INSUFFICIENT_FUNDS, which
// must leave no trace either).
constexpr int64_t kCrashFunding = 20'000;
constexpr size_t kMaxOpsPerStream = 200'000;  // a bound; the kill comes long before

// One connection's share of a crash round: the operations it sent, in order, and the
// reply each got.
struct Stream {
  std::vector<Op> ops;
  std::vector<Reply> replies;  // one per op; lost: no reply came
  size_t sent = 0;             // ops from here on never reached the socket
  std::string end;             // why the connection ended
};

// Pipelines random operations in batches of `depth` on a new connection until the
// connection breaks; counts the replies in *answered.
void Drive(uint16_t port, uint64_t seed, const std::string& txid_prefix, size_t depth, Stream* stream,
           std::atomic<uint64_t>* answered) {
  std::unique_ptr<Client> client = Client::Connect(port, &stream->end);
  if (client == nullptr) return;
  std::mt19937_64 random(seed);
  while (stream->ops.size() < kMaxOpsPerStream) {
    const size_t begin = stream->ops.size();
    for (size_t i = 0; i < depth; ++i) {
      stream->ops.push_back(RandomOp(random, kCrashAccounts, absl::StrCat(txid_prefix, begin + i)));
      stream->replies.push_back(Reply::Lost("never answered"));
      client->Queue(stream->ops.back().ToCommand());
    }
    stream->sent = stream->ops.size();  // even a failed write may have delivered part of it
    if (!client->Flush()) {
      stream->end = "write failed";
      return;
    }
    for (size_t i = begin; i < stream->ops.size(); ++i) {
      Reply reply = client->Receive();
      if (reply.IsLost()) {
        stream->end = reply.text;
        return;
      }
      stream->replies[i] = std::move(reply);
      answered->fetch_add(1);
    }
  }
  stream->end = "every operation answered";
}

struct CrashTally {
  uint64_t acknowledged = 0;        // +OK, found after the restart
  uint64_t rejected = 0;            // INSUFFICIENT_FUNDS, absent after the restart
  uint64_t unanswered_applied = 0;  // no reply; found whole after the restart
  uint64_t unanswered_absent = 0;   // no reply; not there after the restart
  int restarts_from_snapshot = 0;
  int torn_tails_cut = 0;
};

// After a restart, before anything is re-sent: every operation of the round
// against TX. Operations present go into *book; then the balances must match it.
bool CheckRecovered(Client& client, const std::vector<Stream>& streams, Book* book, CrashTally* tally) {
  std::vector<Command> queries;
  for (const Stream& stream : streams) {
    for (const Op& op : stream.ops) queries.push_back({"TX", op.txid});
  }
  const std::vector<Reply> txs = client.CallAll(queries);
  std::vector<std::string> problems;
  size_t k = 0;
  for (const Stream& stream : streams) {
    for (size_t i = 0; i < stream.ops.size(); ++i, ++k) {
      const Op& op = stream.ops[i];
      const Reply& answer = stream.replies[i];
      const bool present = !txs[k].IsNil();
      std::string problem;
      if (present && !op.DescribedBy(txs[k])) {
        problem = "TX shows something else";
      } else if (answer.IsOk()) {
        ++tally->acknowledged;
        if (!present) problem = "acknowledged with +OK, missing after the restart";
      } else if (!answer.IsLost()) {
        ++tally->rejected;
        if (answer.ErrorCode() != "INSUFFICIENT_FUNDS") problem = "unexpected reply";
        if (present) problem = "rejected, yet present after the restart";
      } else if (i >= stream.sent) {
        if (present) problem = "never sent, yet present after the restart";
      } else {
        ++(present ? tally->unanswered_applied : tally->unanswered_absent);
      }
      if (!problem.empty()) {
        problems.push_back(absl::StrCat(absl::StrJoin(op.ToCommand(), " "), ": ", problem, " (reply ",
                                        answer.ToString(), ", TX ", txs[k].ToString(), ")"));
      } else if (present) {
        book->Apply(op);
      }
    }
  }
  if (!problems.empty()) {
    problems.resize(std::min<size_t>(problems.size(), 10));
    ADD_FAILURE() << "operations not recovered as their replies said, e.g.:\n  " << absl::StrJoin(problems, "\n  ");
    return false;
  }
  return ExpectShardHolds(client, *book);
}

// Re-sends up to `count` operations of the round that were acknowledged: each is
// answered +OK again, the same txid with another amount is TXID_REUSED, and nothing
// changes.
bool ResendChangesNothing(Client& client, const std::vector<Stream>& streams, const Book& book, size_t count) {
  std::vector<Op> acknowledged;
  for (const Stream& stream : streams) {
    for (size_t i = 0; i < stream.ops.size(); ++i) {
      if (stream.replies[i].IsOk()) acknowledged.push_back(stream.ops[i]);
    }
  }
  std::vector<Command> resends;
  const size_t step = std::max<size_t>(1, acknowledged.size() / count);
  for (size_t i = 0; i < acknowledged.size() && resends.size() < count; i += step) {
    resends.push_back(acknowledged[i].ToCommand());
  }
  if (!AllOk(resends, client.CallAll(resends))) return false;
  if (!acknowledged.empty()) {
    Op altered = acknowledged.front();
    ++altered.amount;
    const Reply reply = client.Call(altered.ToCommand());
    if (reply.ErrorCode() != "TXID_REUSED") {
      ADD_FAILURE() << absl::StrJoin(altered.ToCommand(), " ") << " -> " << reply.ToString();
      return false;
    }
  }
  return ExpectShardHolds(client, book);
}

// Rounds of: pipelined traffic on several connections, SIGKILL at a random moment,
// restart on the same folder, and the checks above. Small segments and a small
// snapshot trigger make segment rolls and background snapshots happen during the
// traffic, so kills land in all of them. The rounds take turns with the fsync
// policies: a crash of the process alone loses nothing under any of them.
TEST_F(DurabilityTest, CrashRecoveryKeepsEveryAcknowledgedChange) {
  constexpr int kConnections = 4;
  constexpr size_t kDepth = 64;
  constexpr uint64_t kMaxKillDelayMs = 300;
  constexpr size_t kResends = 20;
  const uint64_t rounds = EnvNumber("WALLET_CRASH_ITERATIONS", 6);
  const uint64_t seed = EnvNumber("WALLET_CRASH_SEED", std::random_device{}());
  std::printf("[ crash    ] %llu rounds; seed %llu (WALLET_CRASH_SEED=%llu replays the random choices)\n",
              static_cast<unsigned long long>(rounds), static_cast<unsigned long long>(seed),
              static_cast<unsigned long long>(seed));
  SCOPED_TRACE(absl::StrCat("WALLET_CRASH_SEED=", seed));
  std::mt19937_64 random(seed);
  const auto flags = [this](uint64_t round) {
    static constexpr const char* kPolicies[] = {"always", "everysec", "no"};
    return std::vector<std::string>{"--data_dir=" + DataDir(), "--log_segment_bytes=65536",
                                    "--snapshot_log_bytes=262144", absl::StrCat("--fsync=", kPolicies[round % 3])};
  };

  ASSERT_NO_FATAL_FAILURE(Start(flags(0)));
  Book book;
  const std::vector<Command> setup = OpenAndFund(kCrashAccounts, kCrashFunding, &book);
  ASSERT_TRUE(AllOk(setup, client_->CallAll(setup)));
  client_.reset();

  CrashTally tally;
  for (uint64_t round = 1; round <= rounds; ++round) {
    const uint64_t kill_delay_ms = random() % (kMaxKillDelayMs + 1);
    SCOPED_TRACE(absl::StrCat("round ", round, " (", flags(round - 1).back(), "): SIGKILL ", kill_delay_ms,
                              " ms after the first reply"));
    std::vector<Stream> streams(kConnections);
    std::atomic<uint64_t> answered{0};
    std::vector<std::thread> threads;
    for (int c = 0; c < kConnections; ++c) {
      threads.emplace_back(Drive, shard_->port(), random(), absl::StrCat("r", round, "c", c, "-"), kDepth,
                           &streams[c], &answered);
    }
    const bool flowing = Eventually([&] { return answered.load() > 0; });
    if (flowing) std::this_thread::sleep_for(std::chrono::milliseconds(kill_delay_ms));
    Crash();
    for (std::thread& thread : threads) thread.join();
    ASSERT_TRUE(flowing) << "no reply before the kill: " << streams[0].end;
    if (HasFatalFailure()) return;

    ASSERT_NO_FATAL_FAILURE(Start(flags(round)));
    const std::map<std::string, std::string> recovery = Info(*client_, "persistence");
    const int64_t snapshot_seq = InfoNumber(recovery, "recovery_snapshot_seq");
    const int64_t torn_bytes = InfoNumber(recovery, "recovery_torn_tail_bytes");
    tally.restarts_from_snapshot += snapshot_seq > 0 ? 1 : 0;
    tally.torn_tails_cut += torn_bytes > 0 ? 1 : 0;
    std::printf("[ crash    ] round %llu (%s): killed %llu ms after the first reply, %llu replies; restarted "
                "from snapshot seq %lld + %lld events, torn tail %lld bytes\n",
                static_cast<unsigned long long>(round), flags(round - 1).back().c_str(),
                static_cast<unsigned long long>(kill_delay_ms), static_cast<unsigned long long>(answered.load()),
                static_cast<long long>(snapshot_seq),
                static_cast<long long>(InfoNumber(recovery, "recovery_events_replayed")),
                static_cast<long long>(torn_bytes));
    ASSERT_TRUE(CheckRecovered(*client_, streams, &book, &tally));
    ASSERT_TRUE(ResendChangesNothing(*client_, streams, book, kResends));
  }
  std::printf("[ crash    ] %llu acknowledged, %llu rejected, %llu unanswered and applied, %llu unanswered and "
              "absent; %d restart(s) from a snapshot, %d torn tail(s) cut\n",
              static_cast<unsigned long long>(tally.acknowledged), static_cast<unsigned long long>(tally.rejected),
              static_cast<unsigned long long>(tally.unanswered_applied),
              static_cast<unsigned long long>(tally.unanswered_absent), tally.restarts_from_snapshot,
              tally.torn_tails_cut);

  // Past twice the snapshot trigger in log bytes (a transfer's record is over 64
  // bytes), background snapshots must have been taken and some restart loaded one.
  if (tally.acknowledged * 64 > 2 * 262144) {
    EXPECT_GT(tally.restarts_from_snapshot, 0);
  }

  // Replaying the whole log gives exactly the state of the newest snapshot.
  ASSERT_TRUE(SnapshotAndWait(*client_));
  ExpectVerifyOk();
  Stop();
}

// A kill while a background snapshot is being written leaves its forked child
// running for a while: the restart must not have to wait for that orphan (it holds
// nothing the new shard needs) and must come back with everything acknowledged.
TEST_F(DurabilityTest, KillDuringBackgroundSnapshotStillRestarts) {
  // Enough state that writing a snapshot (~30 ms for 200,000 accounts here) takes
  // several times as long as a kill and restart.
  constexpr int kAccounts = 300'000;
  constexpr int kFunded = 10;
  const std::vector<std::string> flags = {"--data_dir=" + DataDir()};
  ASSERT_NO_FATAL_FAILURE(Start(flags));
  Book book;
  std::vector<Command> commands = OpenAndFund(kFunded, 1'000, &book);
  for (int id = kFunded + 1; id <= kAccounts; ++id) commands.push_back({"OPEN", absl::StrCat(id), "USD"});
  ASSERT_TRUE(AllOk(commands, client_->CallAll(commands)));

  // Kill right after a snapshot started, while INFO still shows it in progress (the
  // shard notices the end of its child on a 10 ms timer, so this is likely, not
  // certain, to be mid-write). A machine that finishes every attempt first cannot
  // show the problem.
  bool killed_mid_snapshot = false;
  std::string duration;
  for (int attempt = 0; attempt < 3 && !killed_mid_snapshot; ++attempt) {
    ASSERT_TRUE(client_->Call({"SNAPSHOT"}).type == REDIS_REPLY_STATUS);
    std::map<std::string, std::string> info = Info(*client_, "persistence");
    if (info["snapshot_in_progress"] == "1") {
      Crash();
      killed_mid_snapshot = true;
    } else {
      duration = info["snapshot_last_duration_ms"];
    }
  }
  if (!killed_mid_snapshot) {
    GTEST_SKIP() << "every snapshot of " << kAccounts << " accounts finished before INFO (last took " << duration
                 << " ms)";
  }
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_NO_FATAL_FAILURE(Start(flags));
  EXPECT_EQ(client_->Call({"DBSIZE"}).ToString(), absl::StrCat(":", kAccounts));
  EXPECT_TRUE(ExpectShardHolds(*client_, book));
  Stop();
}

// A crash in the middle of a write leaves a partial record (or zeros) at the end of
// the newest segment: the restart cuts exactly that, says so, and has the same state.
TEST_F(DurabilityTest, TornTailIsCutAndReported) {
  const std::vector<std::string> flags = {"--data_dir=" + DataDir()};
  ASSERT_NO_FATAL_FAILURE(Start(flags));
  Book book;
  std::vector<Command> commands = OpenAndFund(10, 1'000'000, &book);
  std::mt19937_64 random(2);
  for (int i = 0; i < 300; ++i) {
    const Op op = RandomTransfer(random, 10, absl::StrCat("t-", i));
    commands.push_back(op.ToCommand());
    book.Apply(op);
  }
  ASSERT_TRUE(AllOk(commands, client_->CallAll(commands)));
  const std::string audit = client_->Call({"AUDIT"}).ToString();
  const int64_t last_seq = InfoNumber(Info(*client_, "persistence"), "log_last_seq");
  ASSERT_EQ(last_seq, static_cast<int64_t>(commands.size()));
  Stop();

  // A record header announcing 100 bytes of payload, followed by 20 of them.
  std::string cut_record(shard::logfmt::kRecordHeaderBytes + 20, '\x5a');
  const uint32_t announced = 100;
  std::memcpy(cut_record.data() + 4, &announced, sizeof(announced));
  const std::vector<std::pair<std::string, std::string>> tails = {
      {"a record cut inside its payload", cut_record},
      {"a record header cut short", std::string(9, '\x7f')},
      {"zero-filled space", std::string(4096, '\0')},
  };
  for (const auto& [what, bytes] : tails) {
    SCOPED_TRACE(what);
    const std::vector<std::string> segments = SegmentPaths(DataDir());
    ASSERT_FALSE(segments.empty());
    const std::string& newest = segments.back();
    const uint64_t size = FileSize(newest);
    ASSERT_TRUE(AppendToFile(newest, bytes));

    ASSERT_NO_FATAL_FAILURE(Start(flags));
    const std::string log = shard_->ReadLog();
    EXPECT_TRUE(absl::StrContains(log, absl::StrCat("torn tail cut: ", bytes.size(), " bytes at offset ", size,
                                                    " of ", newest)))
        << log;
    EXPECT_EQ(FileSize(newest), size);
    const std::map<std::string, std::string> info = Info(*client_, "persistence");
    EXPECT_EQ(InfoNumber(info, "recovery_torn_tail_bytes"), static_cast<int64_t>(bytes.size()));
    EXPECT_EQ(InfoNumber(info, "log_last_seq"), last_seq);
    EXPECT_TRUE(ExpectShardHolds(*client_, book));
    EXPECT_EQ(client_->Call({"AUDIT"}).ToString(), audit);
    Stop();
  }
}

// A bad record in an older segment may be followed by acknowledged changes: the
// shard refuses to start, naming file and offset, unless told to keep the prefix.
TEST_F(DurabilityTest, DamageBeforeTheTailRefusesToStart) {
  constexpr size_t kAccounts = 5;
  constexpr size_t kDamagedSeq = 20;  // a record of the oldest segment, after the setup
  const std::vector<std::string> flags = {"--data_dir=" + DataDir(), "--log_segment_bytes=8192"};
  ASSERT_NO_FATAL_FAILURE(Start(flags));
  // One connection, every command accepted: event i is command i. Small batches, so
  // that segments roll (only ever between two loop turns) every 8 KiB or so.
  Book book;
  const std::vector<Command> setup = OpenAndFund(kAccounts, 1'000'000, &book);
  std::mt19937_64 random(3);
  std::vector<Op> transfers;
  for (int i = 0; i < 300; ++i) transfers.push_back(RandomTransfer(random, kAccounts, absl::StrCat("t-", i)));
  std::vector<Command> commands = setup;
  for (const Op& op : transfers) commands.push_back(op.ToCommand());
  ASSERT_TRUE(AllOk(commands, client_->CallAll(commands, 10)));
  ASSERT_EQ(InfoNumber(Info(*client_, "persistence"), "log_last_seq"), static_cast<int64_t>(commands.size()));
  Stop();

  const std::vector<std::string> segments = SegmentPaths(DataDir());
  ASSERT_GE(segments.size(), 3u);
  const std::string& oldest = segments.front();
  absl::StatusOr<std::string> content = ReadFile(oldest);
  ASSERT_TRUE(content.ok()) << content.status();
  const std::vector<uint64_t> offsets = RecordOffsets(*content);
  ASSERT_GT(offsets.size(), kDamagedSeq);
  const uint64_t offset = offsets[kDamagedSeq - 1];
  std::string damaged = *content;
  damaged[offset + shard::logfmt::kRecordHeaderBytes + 2] ^= 0x40;  // a payload byte
  ASSERT_TRUE(WriteWholeFile(oldest, damaged));

  auto [status, log] = StartShardExpectingExit(flags);
  EXPECT_TRUE(status.exited && status.code != 0) << status.ToString() << "; its log:\n" << log;
  EXPECT_TRUE(absl::StrContains(log, absl::StrCat(oldest, " at offset ", offset))) << log;
  EXPECT_EQ(ReadFile(oldest).value_or(""), damaged) << "a refusing shard changed the log";

  // Keeping the prefix: the events before the damage, nothing after.
  std::vector<std::string> keep_flags = flags;
  keep_flags.push_back("--log_damage=keep_prefix");
  ASSERT_NO_FATAL_FAILURE(Start(keep_flags));
  EXPECT_TRUE(absl::StrContains(shard_->ReadLog(), absl::StrCat("DAMAGE kept out: ", oldest, " at offset ", offset)))
      << shard_->ReadLog();
  EXPECT_EQ(InfoNumber(Info(*client_, "persistence"), "log_last_seq"), static_cast<int64_t>(kDamagedSeq - 1));
  Book prefix;
  OpenAndFund(kAccounts, 1'000'000, &prefix);
  const size_t kept = kDamagedSeq - 1 - setup.size();
  for (size_t i = 0; i < kept; ++i) prefix.Apply(transfers[i]);
  EXPECT_TRUE(ExpectShardHolds(*client_, prefix));
  EXPECT_TRUE(AllPresent(*client_, {transfers[kept - 1]}));
  EXPECT_TRUE(client_->Call({"TX", transfers[kept].txid}).IsNil());
  EXPECT_TRUE(client_->Call({"TX", transfers.back().txid}).IsNil());
  for (size_t i = 1; i < segments.size(); ++i) {
    EXPECT_FALSE(std::filesystem::exists(segments[i])) << segments[i];
    EXPECT_TRUE(std::filesystem::exists(segments[i] + ".damaged")) << segments[i];
  }
  // The shard goes on from the prefix, and that survives a restart.
  ExpectKeptAcrossRestart({Kind::kTransfer, 1, 2, 7, "after-damage"}, &prefix, flags);
}

// DEBUG LOGFAULT makes every log write fail: the reply of the change whose write
// failed is held, reads go on, other changes are refused; when writes work again the
// held reply leaves, and a crash afterwards keeps it and not the refused one.
TEST_F(DurabilityTest, DiskFullViaFaultHoldsRepliesAndRecovers) {
  const std::vector<std::string> flags = {"--data_dir=" + DataDir(), "--enable_debug_commands"};
  std::unique_ptr<Client> held, other;
  Book book;
  ASSERT_NO_FATAL_FAILURE(StartWithLogFault(flags, 3, &held, &other, &book));
  Client& control = *client_;
  const Op held_op{Kind::kTransfer, 1, 2, 100, "held-1"};
  ASSERT_TRUE(held->Send(held_op.ToCommand()));
  ASSERT_TRUE(Eventually([this] { return LogFailedNow(); })) << "the log never showed failed";
  ExpectLogFailedWith(*other, ENOSPC);
  const Reply early = held->Receive(100ms);
  EXPECT_TRUE(early.IsLost() && !held->broken()) << "reply before its event was logged: " << early.ToString();

  EXPECT_EQ(other->Call({"BALANCE", "3"}).ToString(), UsdBalance(10'000));
  const Op refused{Kind::kTransfer, 1, 3, 50, "refused-1"};
  ExpectReadOnly(*other, refused);

  ASSERT_TRUE(control.Call({"DEBUG", "LOGFAULT", "OFF"}).IsOk());
  EXPECT_EQ(held->Receive().ToString(), "+OK");
  book.Apply(held_op);
  EXPECT_TRUE(WaitForLogRecovered(control));
  const Op after{Kind::kTransfer, 2, 3, 10, "after-1"};
  EXPECT_TRUE(other->Call(after.ToCommand()).IsOk());
  book.Apply(after);
  EXPECT_EQ(held->Call({"BALANCE", "1"}).ToString(), UsdBalance(book.available[1]));
  held.reset();
  other.reset();

  Crash();
  ASSERT_NO_FATAL_FAILURE(Start(flags));
  EXPECT_TRUE(AllPresent(*client_, {held_op, after}));
  EXPECT_TRUE(client_->Call({"TX", refused.txid}).IsNil());
  EXPECT_TRUE(ExpectShardHolds(*client_, book));
  Stop();
}

// Regression test. At b426098 every connection with replies in the loop turn whose
// log write failed was held, reads included: a BALANCE that shared the turn with a
// failing TRANSFER got no answer until the disk recovered, although reads are
// served while the log is failed. Only the connection whose command appended an
// event waits now. The shard is frozen so that both requests land in one turn.
TEST_F(DurabilityTest, ReadSharingTheFailedTurnIsAnswered) {
  const std::vector<std::string> flags = {"--data_dir=" + DataDir(), "--enable_debug_commands"};
  std::unique_ptr<Client> writer, reader;
  Book book;
  ASSERT_NO_FATAL_FAILURE(StartWithLogFault(flags, 2, &writer, &reader, &book));
  Client& control = *client_;

  ASSERT_TRUE(shard_->process().Freeze().ok());
  const Op transfer{Kind::kTransfer, 1, 2, 5, "same-turn-1"};
  ASSERT_TRUE(writer->Send(transfer.ToCommand()));
  ASSERT_TRUE(reader->Send({"BALANCE", "2"}));
  ASSERT_TRUE(shard_->process().Thaw().ok());

  // The read is answered (with the applied, not yet durable, value); the transfer waits.
  EXPECT_EQ(reader->Receive().ToString(), UsdBalance(10'005));
  const Reply early = writer->Receive(100ms);
  EXPECT_TRUE(early.IsLost() && !writer->broken()) << "reply before its event was logged: " << early.ToString();
  ASSERT_TRUE(control.Call({"DEBUG", "LOGFAULT", "OFF"}).IsOk());
  EXPECT_EQ(writer->Receive().ToString(), "+OK");
  Stop();
}

// Pipelines transfers among accounts 1..accounts on `driver` (batches of 100) until
// log_failed_now() says that the event log failed. The transfers and
// the replies that came are added to *stream; the others are held by the shard.
template <typename LogFailed>
void DriveUntilLogFails(Client& driver, LogFailed log_failed_now, int accounts, std::mt19937_64& random,
                        const std::string& txid_prefix, Stream* stream) {
  bool log_failed = false;
  while (!log_failed && stream->ops.size() < kMaxOpsPerStream) {
    const size_t begin = stream->ops.size();
    for (size_t i = begin; i < begin + 100; ++i) {
      stream->ops.push_back(RandomTransfer(random, accounts, absl::StrCat(txid_prefix, i)));
      stream->replies.push_back(Reply::Lost("held"));
      driver.Queue(stream->ops.back().ToCommand());
    }
    stream->sent = stream->ops.size();
    ASSERT_TRUE(driver.Flush());
    for (size_t i = begin; i < stream->ops.size() && !log_failed;) {
      Reply reply = driver.Receive(20ms);
      if (reply.IsLost()) {
        ASSERT_FALSE(driver.broken()) << reply.text;
        log_failed = log_failed_now();
        continue;
      }
      ASSERT_TRUE(reply.IsOk()) << stream->ops[i].txid << " -> " << reply.ToString();
      stream->replies[i++] = std::move(reply);
    }
  }
  ASSERT_TRUE(log_failed) << "the event log never failed after " << stream->ops.size() << " transfers";
}

// A real full disk: a 4 MiB tmpfs almost filled by another file. Transfers go on until
// the log cannot grow; then replies are held and mutations refused; once the file is
// deleted the shard recovers on its own, and a crash after that loses nothing. Then
// the disk is filled again and the shard killed while it holds replies (its last
// write may have left part of a record): the restart keeps everything acknowledged
// and each held transfer wholly or not at all.
TEST_F(DurabilityTest, DiskFullOnTmpfs) {
  absl::StatusOr<std::unique_ptr<TmpfsMount>> tmpfs = TmpfsMount::Create(dir_->File("tmpfs"), "4m");
  if (!tmpfs.ok()) {
    GTEST_SKIP() << tmpfs.status().message()
                 << " (needs root or CAP_SYS_ADMIN); DiskFullViaFaultHoldsRepliesAndRecovers covers the logic";
  }
  tmpfs_ = std::move(*tmpfs);
  const std::string filler = tmpfs_->path() + "/filler";
  const std::vector<std::string> flags = {"--data_dir=" + tmpfs_->path() + "/data"};
  ASSERT_NO_FATAL_FAILURE(Start(flags));
  std::unique_ptr<Client> driver = Connect();
  std::unique_ptr<Client> other = Connect();
  ASSERT_TRUE(driver != nullptr && other != nullptr);
  constexpr int kAccounts = 10;
  Book book;
  const std::vector<Command> setup = OpenAndFund(kAccounts, 1'000'000'000, &book);
  ASSERT_TRUE(AllOk(setup, client_->CallAll(setup)));

  std::mt19937_64 random(5);
  ASSERT_GT(tmpfs_->FreeBytes(), 1u << 20);
  ASSERT_TRUE(WriteFiller(filler, tmpfs_->FreeBytes() - (192u << 10)));
  Stream filled;
  const auto log_failed_now = [this] { return LogFailedNow(); };
  ASSERT_NO_FATAL_FAILURE(DriveUntilLogFails(*driver, log_failed_now, kAccounts, random, "fill-", &filled));
  ExpectLogFailedWith(*other, ENOSPC);
  const Op refused = RandomTransfer(random, kAccounts, "refused-full");
  ExpectReadOnly(*other, refused);

  // Space comes back: the held replies leave and new changes are accepted.
  ASSERT_EQ(unlink(filler.c_str()), 0) << std::strerror(errno);
  for (size_t i = 0; i < filled.ops.size(); ++i) {
    if (filled.replies[i].IsLost()) filled.replies[i] = driver->Receive();
    ASSERT_TRUE(filled.replies[i].IsOk()) << filled.ops[i].txid << " -> " << filled.replies[i].ToString();
  }
  EXPECT_TRUE(WaitForLogRecovered(*client_));
  std::vector<Op> more = {refused};  // retried with its txid
  for (int i = 0; i < 50; ++i) more.push_back(RandomTransfer(random, kAccounts, absl::StrCat("more-", i)));
  ASSERT_TRUE(AllOk(Commands(more), other->CallAll(Commands(more))));
  std::vector<Op> acknowledged = filled.ops;
  acknowledged.insert(acknowledged.end(), more.begin(), more.end());
  for (const Op& op : acknowledged) book.Apply(op);
  EXPECT_TRUE(AllPresent(*other, acknowledged));
  EXPECT_TRUE(ExpectShardHolds(*other, book));
  driver.reset();
  other.reset();
  Crash();
  ASSERT_NO_FATAL_FAILURE(Start(flags));
  EXPECT_TRUE(AllPresent(*client_, acknowledged));
  EXPECT_TRUE(ExpectShardHolds(*client_, book));

  // Full again, and killed while holding replies.
  driver = Connect();
  ASSERT_NE(driver, nullptr);
  ASSERT_TRUE(WriteFiller(filler, tmpfs_->FreeBytes() - (64u << 10)));
  Stream held;
  ASSERT_NO_FATAL_FAILURE(DriveUntilLogFails(*driver, log_failed_now, kAccounts, random, "held-", &held));
  driver.reset();
  Crash();
  ASSERT_EQ(unlink(filler.c_str()), 0) << std::strerror(errno);
  ASSERT_NO_FATAL_FAILURE(Start(flags));
  std::printf("[ tmpfs    ] restart after a kill on a full disk: torn tail %s bytes cut\n",
              Info(*client_, "persistence")["recovery_torn_tail_bytes"].c_str());
  CrashTally tally;
  EXPECT_TRUE(CheckRecovered(*client_, {held}, &book, &tally));
  EXPECT_TRUE(AllPresent(*client_, acknowledged));
  Stop();
}

// wallet-history on a folder with every segment kept: the state at a sequence
// number and at a time, one account's history, and the replay check.
TEST_F(DurabilityTest, HistoryToolAnswers) {
  constexpr int kAccounts = 5;
  const std::vector<std::string> flags = {"--data_dir=" + DataDir(), "--keep_log_segments",
                                          "--log_segment_bytes=8192", "--snapshot_log_bytes=16384"};
  ASSERT_NO_FATAL_FAILURE(Start(flags));
  std::mt19937_64 random(6);
  Book book;
  std::vector<Command> first_half = OpenAndFund(kAccounts, 1'000'000, &book);
  std::vector<Op> ops;
  for (int i = 0; i < 400; ++i) {
    ops.push_back(RandomOp(random, kAccounts, absl::StrCat("h-", i)));
    if (i < 200) first_half.push_back(ops.back().ToCommand());
  }
  ASSERT_TRUE(AllOk(first_half, client_->CallAll(first_half)));
  for (int i = 0; i < 200; ++i) book.Apply(ops[i]);
  const Book middle = book;
  const int64_t middle_seq = InfoNumber(Info(*client_, "persistence"), "log_last_seq");
  ASSERT_TRUE(SnapshotAndWait(*client_));
  const int64_t middle_ms = WallClockMs();
  ASSERT_TRUE(Eventually([&] { return WallClockMs() > middle_ms; }));  // later events: later times
  const std::vector<Op> second_half(ops.begin() + 200, ops.end());
  ASSERT_TRUE(AllOk(Commands(second_half), client_->CallAll(Commands(second_half))));
  for (const Op& op : second_half) book.Apply(op);
  const int64_t end_seq = InfoNumber(Info(*client_, "persistence"), "log_last_seq");
  ASSERT_TRUE(SnapshotAndWait(*client_));

  const std::string data_flag = "--data_dir=" + DataDir();
  const auto totals = [](const Book& of) {
    return absl::StrCat("available: ", of.deposited - of.withdrawn, "\nheld: 0\npending_credit: 0\ndeposited: ",
                        of.deposited, "\nwithdrawn: ", of.withdrawn, "\n");
  };
  // `wallet-history state` at `point` (a flag; none: the end) reaches `seq` and
  // prints the totals of `expected`.
  const auto expect_state = [&](const std::string& point, int64_t seq, const Book& expected) {
    SCOPED_TRACE(point.empty() ? "the end" : point);
    std::vector<std::string> args = {"state", data_flag};
    if (!point.empty()) args.push_back(point);
    auto [status, output] = History(args);
    EXPECT_TRUE(status.success()) << status.ToString() << "\n" << output;
    EXPECT_TRUE(absl::StrContains(output, absl::StrCat("state at seq ", seq, " "))) << output;
    EXPECT_TRUE(absl::StrContains(output, totals(expected))) << output << "\nexpected:\n" << totals(expected);
  };
  expect_state(absl::StrCat("--at_seq=", middle_seq), middle_seq, middle);
  expect_state(absl::StrCat("--at_time_ms=", middle_ms), middle_seq, middle);
  expect_state("", end_seq, book);
  EXPECT_NE(totals(middle), totals(book));  // the middle differs from the end

  // Account 1: OPEN, its funding, and every operation that touched it, in order; the
  // balance after the last one is what BALANCE says.
  const Reply balance = client_->Call({"BALANCE", "1"});
  ASSERT_EQ(balance.type, REDIS_REPLY_ARRAY) << balance.ToString();
  auto [account_status, account] = History({"account", data_flag, "--account=1"});
  EXPECT_TRUE(account_status.success()) << account;
  std::vector<std::string> events;
  for (absl::string_view line : absl::StrSplit(account, '\n')) {
    if (absl::StrContains(line, " -> ")) events.emplace_back(line);
  }
  const size_t touching = 2 + std::count_if(ops.begin(), ops.end(), [](const Op& op) { return op.Touches(1); });
  EXPECT_EQ(events.size(), touching) << account;
  ASSERT_FALSE(events.empty()) << account;
  EXPECT_TRUE(absl::EndsWith(events.back(), absl::StrCat(" -> available=", balance.elements[0].integer,
                                                          " held=0 pending_credit=0 currency=USD")))
      << events.back() << " vs BALANCE " << balance.ToString();
  const auto last = std::find_if(ops.rbegin(), ops.rend(), [](const Op& op) { return op.Touches(1); });
  ASSERT_NE(last, ops.rend());
  EXPECT_TRUE(absl::StrContains(events.back(), " txid=" + last->txid + " ")) << events.back();

  ExpectVerifyOk();
  Stop();
}

// ---------------------------------------------------------------------------

// The folder lock: a second shard on a folder in use refuses to start, naming the
// holder, and the first one is unaffected.
TEST_F(DurabilityTest, SecondShardOnSameDataDirRefused) {
  const std::vector<std::string> flags = {"--data_dir=" + DataDir()};
  ASSERT_NO_FATAL_FAILURE(Start(flags));
  Book book;
  const std::vector<Command> setup = OpenAndFund(2, 500, &book);
  ASSERT_TRUE(AllOk(setup, client_->CallAll(setup)));

  auto [status, log] = StartShardExpectingExit(flags);
  EXPECT_TRUE(status.exited && status.code != 0) << status.ToString() << "; its log:\n" << log;
  EXPECT_TRUE(absl::StrContains(log, "in use by another shard")) << log;
  EXPECT_TRUE(absl::StrContains(log, absl::StrCat("pid ", shard_->pid()))) << log;
  EXPECT_FALSE(ReadFile(dir_->File(absl::StrCat("refused-", shard_starts_, ".port"))).ok());

  // The first shard still serves reads and writes; once it stopped, the folder can
  // be taken, with everything in it.
  EXPECT_EQ(client_->Call({"BALANCE", "1"}).ToString(), UsdBalance(500));
  ExpectKeptAcrossRestart({Kind::kTransfer, 1, 2, 200, "after-refusal"}, &book, flags);
}

}  // namespace
}  // namespace wallet::test
