// wallet-shard-bench: a pipelined load driver that runs the same atomic transfer
// against wallet-shard and against its peer, redis-server with a Lua transfer
// script, with identical client settings. --target=wallet also drives a
// wallet-router (same commands; verify then skips the shard's AUDIT).
//
//   wallet-shard-bench --target=wallet --port=7001 --phases=setup,run,verify
//   wallet-shard-bench --target=redis  --port=6379 --phases=setup,run,verify
//   wallet-shard-bench --target=ping   --port=6379          # the driver's own ceiling
//
// Client model (the same for every target): --connections TCP connections, each
// sending batches of --pipeline commands and sending the next batch when every reply
// of the previous one has arrived (redis-benchmark's -c/-P model). All connections
// are non-blocking sockets driven by one epoll loop in one thread; replies are parsed
// with hiredis's reply reader (redisReader). Commands are written as RESP arrays
// directly into each connection's output buffer.
//
// Targets and the command each transfer sends:
//   wallet  TRANSFER <from> <to> <amount> USD <txid>       (unique 20-byte txids)
//   redis   EVALSHA <sha> 2 acct:<from> acct:<to> <amount>  (kTransferLua below,
//           loaded with SCRIPT LOAD by this driver)
//   ping    PING                                            (any RESP server)
// from != to are drawn uniformly from accounts first_account..first_account+N-1,
// amounts uniformly from 1..max_amount.
//
// Cluster workloads (wallet target, usually through a wallet-router):
//   --pairs=same   from and to are owned by the same shard; --pairs=cross: by different
//                  shards. The owner of every account is learnt before the run by asking
//                  each shard of --shard_ports `PARTITION <account>` ([partition, owned]);
//                  exactly one of them must own it. --pairs=any (default): as above.
//   --transfer_mode=tcc|saga   appends `MODE tcc|saga` to every TRANSFER (default: none).
//
// Phases (--phases, comma separated, run in this order):
//   open    wallet: OPEN <id> USD for every account; redis: SET acct:<id> <balance>
//   setup   wallet: OPEN and DEPOSIT <id> <balance> fund-<id>; redis: SET acct:<id> <balance>
//   run     transfers (or PINGs) for --warmup_s + --duration_s; only replies that arrive
//           within the --duration_s window after the warm-up are counted (or, with
//           --requests=N, exactly N requests, all counted)
//   verify  sums every account's balance (wallet: BALANCE, available + held; redis:
//           MGET) and checks it equals accounts x initial_balance: money conserved
//
// Output: human-readable lines on stderr, and one line per phase on stdout starting
// with "RESULT " and made of key=value pairs, for scripts (run_shard_vs_redis.sh).
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "common/strings.h"
#include "hiredis/hiredis.h"

ABSL_FLAG(std::string, target, "wallet", "wallet | redis | ping");
ABSL_FLAG(std::string, host, "127.0.0.1", "Server address (IPv4 or a host name).");
ABSL_FLAG(int32_t, port, 7001, "Server port.");
ABSL_FLAG(int32_t, connections, 50, "TCP connections (redis-benchmark -c).");
ABSL_FLAG(int32_t, pipeline, 32, "Commands per batch on each connection (redis-benchmark -P).");
ABSL_FLAG(uint64_t, accounts, 100'000, "Accounts used (ids first_account..first_account+N-1).");
ABSL_FLAG(uint64_t, first_account, 0,
          "First account id (0, so that redis-benchmark -r N hits the same keys).");
ABSL_FLAG(int64_t, initial_balance, 1'000'000, "Balance each account is funded with (minor units).");
ABSL_FLAG(int64_t, max_amount, 100, "Transfer amounts are drawn from 1..max_amount.");
ABSL_FLAG(double, duration_s, 10, "Measured duration of the run phase, after the warm-up.");
ABSL_FLAG(double, warmup_s, 1, "Run-phase warm-up whose replies are not counted.");
ABSL_FLAG(uint64_t, requests, 0,
          "If > 0, the run phase sends exactly this many requests and counts them all "
          "(no warm-up) instead of running for --duration_s.");
ABSL_FLAG(std::string, phases, "setup,run,verify", "Comma-separated: open, setup, run, verify.");
ABSL_FLAG(int32_t, redis_key_pad, 0,
          "Zero-pad account numbers in Redis keys to this many digits (12 matches "
          "redis-benchmark's __rand_int__, for the cross-check); 0: acct:<id>.");
ABSL_FLAG(std::string, txid_prefix, "",
          "Prefix of the run's transaction ids (8 characters; empty: random). Ids are "
          "<prefix>-<11-digit counter>.");
ABSL_FLAG(int32_t, server_pid, 0,
          "If set, report the server process's CPU use (from /proc) during the run.");
ABSL_FLAG(bool, print_lua, false, "Print the Redis transfer script and exit.");
ABSL_FLAG(double, stall_s, 30, "Fail if no reply arrives for this long.");
ABSL_FLAG(std::string, pairs, "any",
          "wallet run phase: any (uniform pairs) | same (both accounts on one shard) | cross "
          "(on different shards); same/cross need --shard_ports.");
ABSL_FLAG(std::string, shard_ports, "",
          "Comma-separated ports (on --host) of every shard of the cluster, asked `PARTITION "
          "<account>` for each account to learn its owner (for --pairs=same|cross).");
ABSL_FLAG(std::string, transfer_mode, "",
          "If set (tcc or saga), every TRANSFER ends with MODE <transfer_mode>.");

namespace {

// The peer's transfer: read the balance, refuse if short, DECRBY, INCRBY — one atomic
// script, as a team would write it instead of using the wallet store.
constexpr char kTransferLua[] =
    "local balance = tonumber(redis.call('GET', KEYS[1]))\n"
    "if not balance then return redis.error_reply('UNKNOWN_ACCOUNT') end\n"
    "local amount = tonumber(ARGV[1])\n"
    "if balance < amount then return redis.error_reply('INSUFFICIENT_FUNDS') end\n"
    "redis.call('DECRBY', KEYS[1], amount)\n"
    "redis.call('INCRBY', KEYS[2], amount)\n"
    "return redis.status_reply('OK')\n";

enum class Target { kWallet, kRedis, kPing };

int64_t MonotonicNs() {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<int64_t>(now.tv_sec) * 1'000'000'000 + now.tv_nsec;
}

double CpuSeconds() {
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

// CPU seconds (user + system) a process has used, from /proc/<pid>/stat; -1 if unknown.
double ProcessCpuSeconds(int pid) {
  if (pid <= 0) return -1;
  char path[64];
  std::snprintf(path, sizeof(path), "/proc/%d/stat", pid);
  FILE* file = std::fopen(path, "r");
  if (file == nullptr) return -1;
  char buffer[1024];
  size_t n = std::fread(buffer, 1, sizeof(buffer) - 1, file);
  std::fclose(file);
  buffer[n] = '\0';
  // Fields after the command name (which is in parentheses and may hold spaces).
  const char* p = std::strrchr(buffer, ')');
  if (p == nullptr) return -1;
  unsigned long utime = 0, stime = 0;
  // state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
  if (std::sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime,
                  &stime) != 2) {
    return -1;
  }
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// CPU seconds all processors spent busy (not idle, not waiting for I/O), from
// /proc/stat; -1 if unknown. Busy minus driver minus server = what else ran.
double MachineBusySeconds() {
  FILE* file = std::fopen("/proc/stat", "r");
  if (file == nullptr) return -1;
  unsigned long long user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0,
                     steal = 0;
  int fields = std::fscanf(file, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &user, &nice,
                           &system, &idle, &iowait, &irq, &softirq, &steal);
  std::fclose(file);
  if (fields < 4) return -1;
  return static_cast<double>(user + nice + system + irq + softirq + steal) /
         static_cast<double>(sysconf(_SC_CLK_TCK));
}

// ---------------------------------------------------------------------------
// RESP request building.

void AppendDecimal(std::string* out, uint64_t value) {
  char digits[24];
  auto [end, ec] = std::to_chars(digits, digits + sizeof(digits), value);
  out->append(digits, static_cast<size_t>(end - digits));
}

void AppendArrayHeader(std::string* out, size_t count) {
  out->push_back('*');
  AppendDecimal(out, count);
  out->append("\r\n", 2);
}

void AppendBulk(std::string* out, std::string_view text) {
  out->push_back('$');
  AppendDecimal(out, text.size());
  out->append("\r\n", 2);
  out->append(text.data(), text.size());
  out->append("\r\n", 2);
}

void AppendBulkNumber(std::string* out, uint64_t value) {
  char digits[24];
  auto [end, ec] = std::to_chars(digits, digits + sizeof(digits), value);
  AppendBulk(out, std::string_view(digits, static_cast<size_t>(end - digits)));
}

// "acct:<id>", the id zero-padded to `pad` digits when pad > 0.
void AppendRedisKey(std::string* out, uint64_t account, int pad) {
  out->append("acct:", 5);
  char digits[24];
  auto [end, ec] = std::to_chars(digits, digits + sizeof(digits), account);
  int length = static_cast<int>(end - digits);
  for (int i = length; i < pad; ++i) out->push_back('0');
  out->append(digits, static_cast<size_t>(length));
}

void AppendRedisKeyBulk(std::string* out, uint64_t account, int pad) {
  std::string key;
  key.reserve(32);
  AppendRedisKey(&key, account, pad);
  AppendBulk(out, key);
}

// ---------------------------------------------------------------------------
// Latency histogram: 1 µs buckets up to 1 s, one overflow bucket.

class Histogram {
 public:
  Histogram() : buckets_(kBuckets + 1, 0) {}
  void Add(int64_t latency_ns) {
    int64_t us = latency_ns / 1000;
    if (us < 0) us = 0;
    ++buckets_[static_cast<size_t>(std::min<int64_t>(us, kBuckets))];
    ++count_;
    max_us_ = std::max(max_us_, us);
  }
  uint64_t count() const { return count_; }
  int64_t max_us() const { return max_us_; }
  // Smallest latency (µs) at or below which `fraction` of the samples lie.
  int64_t PercentileUs(double fraction) const {
    if (count_ == 0) return 0;
    uint64_t rank = static_cast<uint64_t>(fraction * static_cast<double>(count_));
    if (rank >= count_) rank = count_ - 1;
    uint64_t seen = 0;
    for (size_t i = 0; i < buckets_.size(); ++i) {
      seen += buckets_[i];
      if (seen > rank) return static_cast<int64_t>(i);
    }
    return kBuckets;
  }

 private:
  static constexpr int64_t kBuckets = 1'000'000;
  std::vector<uint64_t> buckets_;
  uint64_t count_ = 0;
  int64_t max_us_ = 0;
};

// ---------------------------------------------------------------------------
// Workloads: what to send next, and what to make of each reply.

class Workload {
 public:
  virtual ~Workload() = default;
  // Appends the next command(s) to *out and returns how many (commands that must
  // stay in order go out together on one connection); 0 when nothing is left.
  virtual int Next(std::string* out) = 0;
  // Every reply that is not an error (errors are counted by the driver).
  virtual void OnValue(const redisReply& reply) { (void)reply; }
};

class TransferWorkload : public Workload {
 public:
  enum class PairMode { kAny, kSame, kCross };  // --pairs
  // The accounts of each shard, for --pairs=same|cross (unused with kAny).
  struct Groups {
    std::vector<std::vector<uint64_t>> accounts;  // per shard, account offsets (0..N-1)
    std::vector<uint32_t> owner;                  // per account offset, index into accounts
  };

  TransferWorkload(Target target, std::string sha, std::string txid_prefix, int redis_key_pad,
                   uint64_t limit, PairMode pairs = PairMode::kAny, const Groups* groups = nullptr,
                   std::string mode = "")
      : pairs_(pairs),
        groups_(groups),
        mode_(std::move(mode)),
        target_(target),
        limit_(limit),
        sha_(std::move(sha)),
        prefix_(std::move(txid_prefix)),
        pad_(redis_key_pad),
        random_(std::random_device{}()),
        accounts_(absl::GetFlag(FLAGS_accounts)),
        first_(absl::GetFlag(FLAGS_first_account)),
        max_amount_(static_cast<uint64_t>(absl::GetFlag(FLAGS_max_amount))) {}

  int Next(std::string* out) override {
    if (limit_ != 0 && sent_++ >= limit_) return 0;
    if (target_ == Target::kPing) {
      out->append("*1\r\n$4\r\nPING\r\n");
      return 1;
    }
    uint64_t from = random_() % accounts_;
    uint64_t to;
    if (pairs_ == PairMode::kAny) {
      to = random_() % (accounts_ - 1);
      if (to >= from) ++to;  // uniform over the other accounts
    } else {
      to = PairedAccount(from);
    }
    from += first_;
    to += first_;
    uint64_t amount = 1 + random_() % max_amount_;
    if (target_ == Target::kWallet) {
      out->append(mode_.empty() ? "*6\r\n$8\r\nTRANSFER\r\n" : "*8\r\n$8\r\nTRANSFER\r\n");
      AppendBulkNumber(out, from);
      AppendBulkNumber(out, to);
      AppendBulkNumber(out, amount);
      out->append("$3\r\nUSD\r\n");
      // <prefix>-<11-digit counter>: 20 bytes with the default 8-character prefix.
      char txid[64];
      size_t length = prefix_.size();
      std::memcpy(txid, prefix_.data(), length);
      txid[length++] = '-';
      uint64_t value = counter_++;
      for (int i = 10; i >= 0; --i) {
        txid[length + static_cast<size_t>(i)] = static_cast<char>('0' + value % 10);
        value /= 10;
      }
      length += 11;
      AppendBulk(out, std::string_view(txid, length));
      if (!mode_.empty()) {
        out->append("$4\r\nMODE\r\n");
        AppendBulk(out, mode_);
      }
    } else {
      out->append("*6\r\n$7\r\nEVALSHA\r\n");
      AppendBulk(out, sha_);
      out->append("$1\r\n2\r\n");
      AppendRedisKeyBulk(out, from, pad_);
      AppendRedisKeyBulk(out, to, pad_);
      AppendBulkNumber(out, amount);
    }
    return 1;
  }

 private:
  // An account offset paired with `from` under --pairs=same|cross, uniform over the
  // candidates (the other accounts of from's shard, or the accounts of other shards).
  uint64_t PairedAccount(uint64_t from) {
    const uint32_t home = groups_->owner[from];
    if (pairs_ == PairMode::kSame) {
      const std::vector<uint64_t>& mine = groups_->accounts[home];
      for (;;) {  // mine holds from and (checked at start) at least one more
        uint64_t to = mine[random_() % mine.size()];
        if (to != from) return to;
      }
    }
    uint64_t index = random_() % (accounts_ - groups_->accounts[home].size());
    for (uint32_t shard = 0; shard < groups_->accounts.size(); ++shard) {
      if (shard == home) continue;
      const std::vector<uint64_t>& theirs = groups_->accounts[shard];
      if (index < theirs.size()) return theirs[index];
      index -= theirs.size();
    }
    return groups_->accounts[home == 0 ? 1 : 0][0];  // not reached
  }

  PairMode pairs_;
  const Groups* groups_;
  std::string mode_;
  Target target_;
  uint64_t limit_;  // 0: unlimited
  uint64_t sent_ = 0;
  std::string sha_;
  std::string prefix_;
  int pad_;
  std::mt19937_64 random_;
  uint64_t accounts_;
  uint64_t first_;
  uint64_t max_amount_;
  uint64_t counter_ = 0;
};

// open/setup: one pass over the accounts.
class SetupWorkload : public Workload {
 public:
  SetupWorkload(Target target, bool fund, int redis_key_pad)
      : target_(target),
        fund_(fund),
        pad_(redis_key_pad),
        next_(absl::GetFlag(FLAGS_first_account)),
        end_(next_ + absl::GetFlag(FLAGS_accounts)),
        balance_(static_cast<uint64_t>(absl::GetFlag(FLAGS_initial_balance))) {}

  int Next(std::string* out) override {
    if (next_ >= end_) return 0;
    uint64_t id = next_++;
    if (target_ == Target::kRedis) {
      out->append("*3\r\n$3\r\nSET\r\n");
      AppendRedisKeyBulk(out, id, pad_);
      AppendBulkNumber(out, balance_);
      return 1;
    }
    out->append("*3\r\n$4\r\nOPEN\r\n");
    AppendBulkNumber(out, id);
    out->append("$3\r\nUSD\r\n");
    if (!fund_ || balance_ == 0) return 1;
    // The DEPOSIT goes right after its OPEN on the same connection.
    out->append("*4\r\n$7\r\nDEPOSIT\r\n");
    AppendBulkNumber(out, id);
    AppendBulkNumber(out, balance_);
    std::string txid = "fund-";
    AppendDecimal(&txid, id);
    AppendBulk(out, txid);
    return 2;
  }

 private:
  Target target_;
  bool fund_;
  int pad_;
  uint64_t next_;
  uint64_t end_;
  uint64_t balance_;
};

// verify: sums every balance.
class VerifyWorkload : public Workload {
 public:
  static constexpr uint64_t kKeysPerMget = 100;

  VerifyWorkload(Target target, int redis_key_pad)
      : target_(target),
        pad_(redis_key_pad),
        next_(absl::GetFlag(FLAGS_first_account)),
        end_(next_ + absl::GetFlag(FLAGS_accounts)) {}

  int Next(std::string* out) override {
    if (next_ >= end_) return 0;
    if (target_ == Target::kWallet) {
      out->append("*2\r\n$7\r\nBALANCE\r\n");
      AppendBulkNumber(out, next_++);
      return 1;
    }
    uint64_t count = std::min(kKeysPerMget, end_ - next_);
    AppendArrayHeader(out, count + 1);
    out->append("$4\r\nMGET\r\n");
    for (uint64_t i = 0; i < count; ++i) AppendRedisKeyBulk(out, next_++, pad_);
    return 1;
  }

  void OnValue(const redisReply& reply) override {
    if (target_ == Target::kWallet) {
      // BALANCE: [available, held, currency]
      if (reply.type != REDIS_REPLY_ARRAY || reply.elements != 3 ||
          reply.element[0]->type != REDIS_REPLY_INTEGER ||
          reply.element[1]->type != REDIS_REPLY_INTEGER) {
        ++malformed_;
        return;
      }
      total_ += static_cast<__int128>(reply.element[0]->integer) + reply.element[1]->integer;
      ++accounts_seen_;
      return;
    }
    if (reply.type != REDIS_REPLY_ARRAY) {
      ++malformed_;
      return;
    }
    for (size_t i = 0; i < reply.elements; ++i) {
      const redisReply* value = reply.element[i];
      if (value->type == REDIS_REPLY_NIL) {
        ++missing_;
        continue;
      }
      if (value->type != REDIS_REPLY_STRING) {
        ++malformed_;
        continue;
      }
      total_ += std::strtoll(value->str, nullptr, 10);
      ++accounts_seen_;
    }
  }

  __int128 total() const { return total_; }
  uint64_t accounts_seen() const { return accounts_seen_; }
  uint64_t missing() const { return missing_; }
  uint64_t malformed() const { return malformed_; }

 private:
  Target target_;
  int pad_;
  uint64_t next_;
  uint64_t end_;
  __int128 total_ = 0;
  uint64_t accounts_seen_ = 0;
  uint64_t missing_ = 0;
  uint64_t malformed_ = 0;
};

// ---------------------------------------------------------------------------
// The driver: connections, one epoll loop.

struct PhaseStats {
  uint64_t sent = 0;
  uint64_t replies = 0;
  uint64_t measured_replies = 0;  // replies inside the measured window
  uint64_t measured_ok = 0;
  std::map<std::string, uint64_t> errors;           // every reply, by error code
  std::map<std::string, uint64_t> measured_errors;  // inside the window
  Histogram latency;  // replies inside the window (all replies for count phases)
  double measured_s = 0;
  double driver_cpu_s = 0;
  double server_cpu_s = -1;
  double machine_busy_s = -1;  // every process on the machine
};

class Driver {
 public:
  struct Connection {
    int fd = -1;
    redisReader* reader = nullptr;
    std::string out;
    size_t out_sent = 0;
    uint32_t outstanding = 0;
    int64_t batch_sent_ns = 0;
    bool writing = false;  // EPOLLOUT armed
    bool done = false;     // workload exhausted for this connection
  };

  Driver(std::string host, int port, int connection_count, int pipeline)
      : host_(std::move(host)), port_(port), connection_count_(connection_count), pipeline_(pipeline) {}

  ~Driver() {
    for (Connection& connection : connections_) {
      if (connection.fd >= 0) close(connection.fd);
      if (connection.reader != nullptr) redisReaderFree(connection.reader);
    }
    if (epoll_fd_ >= 0) close(epoll_fd_);
  }

  bool Connect(std::string* error) {
    epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
    if (epoll_fd_ < 0) {
      *error = wallet::StrCat("epoll_create1: ", std::strerror(errno));
      return false;
    }
    struct addrinfo hints;
    std::memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    struct addrinfo* addresses = nullptr;
    std::string port_text = std::to_string(port_);
    if (int rc = getaddrinfo(host_.c_str(), port_text.c_str(), &hints, &addresses); rc != 0) {
      *error = wallet::StrCat("cannot resolve ", host_, ": ", gai_strerror(rc));
      return false;
    }
    connections_.resize(static_cast<size_t>(connection_count_));
    bool ok = true;
    for (Connection& connection : connections_) {
      int fd = socket(addresses->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd < 0 || connect(fd, addresses->ai_addr, addresses->ai_addrlen) != 0) {
        *error = wallet::StrCat("connect ", host_, ":", port_, ": ", std::strerror(errno));
        if (fd >= 0) close(fd);
        ok = false;
        break;
      }
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
      connection.fd = fd;
      connection.reader = redisReaderCreate();
      struct epoll_event event;
      std::memset(&event, 0, sizeof(event));
      event.events = EPOLLIN;
      event.data.ptr = &connection;
      epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &event);
    }
    freeaddrinfo(addresses);
    return ok;
  }

  // Runs `workload` on every connection. With duration_s > 0: sends for
  // warmup_s + duration_s and counts replies arriving in the window after the
  // warm-up; otherwise until the workload is exhausted, counting everything.
  bool Run(Workload& workload, double warmup_s, double duration_s, int server_pid,
           const char* label, PhaseStats* stats, std::string* error) {
    const bool timed = duration_s > 0;
    const int64_t start_ns = MonotonicNs();
    const int64_t window_start_ns = timed ? start_ns + static_cast<int64_t>(warmup_s * 1e9) : start_ns;
    const int64_t window_end_ns =
        timed ? window_start_ns + static_cast<int64_t>(duration_s * 1e9) : INT64_MAX;
    const int64_t stall_ns = static_cast<int64_t>(absl::GetFlag(FLAGS_stall_s) * 1e9);
    workload_ = &workload;
    stats_ = stats;
    exhausted_ = false;
    stopping_ = false;
    in_window_ = !timed;
    window_start_ns_ = window_start_ns;
    window_end_ns_ = window_end_ns;
    double window_cpu_start = timed ? -1 : CpuSeconds();
    double window_server_cpu_start = timed ? -1 : ProcessCpuSeconds(server_pid);
    double window_cpu_end = -1, window_server_cpu_end = -1;
    double window_busy_start = timed ? -1 : MachineBusySeconds(), window_busy_end = -1;
    bool window_started = !timed;
    int64_t last_progress_ns = start_ns;
    int64_t next_report_ns = start_ns + 1'000'000'000;
    uint64_t replies_at_report = 0;
    outstanding_total_ = 0;
    for (Connection& connection : connections_) {
      connection.done = false;
      SendBatch(connection, start_ns);
    }
    struct epoll_event events[256];
    while (outstanding_total_ > 0 || HasUnsent()) {
      int ready = epoll_wait(epoll_fd_, events, 256, 100);
      if (ready < 0) {
        if (errno == EINTR) continue;
        *error = wallet::StrCat("epoll_wait: ", std::strerror(errno));
        return false;
      }
      int64_t now_ns = MonotonicNs();
      if (timed && !window_started && now_ns >= window_start_ns) {
        window_started = true;
        in_window_ = true;
        window_cpu_start = CpuSeconds();
        window_server_cpu_start = ProcessCpuSeconds(server_pid);
        window_busy_start = MachineBusySeconds();
      }
      if (timed && !stopping_ && now_ns >= window_end_ns) {
        stopping_ = true;
        in_window_ = false;
        window_cpu_end = CpuSeconds();
        window_server_cpu_end = ProcessCpuSeconds(server_pid);
        window_busy_end = MachineBusySeconds();
      }
      uint64_t replies_before = stats->replies;
      for (int i = 0; i < ready; ++i) {
        auto* connection = static_cast<Connection*>(events[i].data.ptr);
        if (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
          if (!ReadReplies(*connection, error)) return false;
        }
        if (events[i].events & EPOLLOUT) {
          if (!Flush(*connection, error)) return false;
        }
      }
      if (stats->replies != replies_before) last_progress_ns = now_ns;
      if (now_ns - last_progress_ns > stall_ns) {
        *error = wallet::StrCat("no reply for ", absl::GetFlag(FLAGS_stall_s), " s (",
                                outstanding_total_, " requests outstanding)");
        return false;
      }
      if (now_ns >= next_report_ns) {
        std::fprintf(stderr, "%s: %.0f s, %" PRIu64 " replies, %" PRIu64 "/s\n", label,
                     static_cast<double>(now_ns - start_ns) / 1e9, stats->replies,
                     stats->replies - replies_at_report);
        replies_at_report = stats->replies;
        next_report_ns += 1'000'000'000;
      }
    }
    int64_t end_ns = MonotonicNs();
    if (timed) {
      if (window_cpu_end < 0) {  // ended early (cannot happen for transfer workloads)
        window_cpu_end = CpuSeconds();
        window_server_cpu_end = ProcessCpuSeconds(server_pid);
        window_busy_end = MachineBusySeconds();
        window_end_ns_ = end_ns;
      }
      stats->measured_s = static_cast<double>(window_end_ns_ - window_start_ns) / 1e9;
    } else {
      window_cpu_end = CpuSeconds();
      window_server_cpu_end = ProcessCpuSeconds(server_pid);
      window_busy_end = MachineBusySeconds();
      stats->measured_s = static_cast<double>(end_ns - start_ns) / 1e9;
    }
    stats->driver_cpu_s = window_cpu_end - window_cpu_start;
    if (window_server_cpu_start >= 0 && window_server_cpu_end >= 0) {
      stats->server_cpu_s = window_server_cpu_end - window_server_cpu_start;
    }
    if (window_busy_start >= 0 && window_busy_end >= 0) {
      stats->machine_busy_s = window_busy_end - window_busy_start;
    }
    return true;
  }

 private:
  bool HasUnsent() const { return !exhausted_ && !stopping_; }

  void SendBatch(Connection& connection, int64_t now_ns) {
    if (stopping_ || connection.done) return;
    uint32_t added = 0;
    while (added < static_cast<uint32_t>(pipeline_)) {
      int commands = workload_->Next(&connection.out);
      if (commands == 0) {
        exhausted_ = true;
        connection.done = true;
        break;
      }
      added += static_cast<uint32_t>(commands);
    }
    if (added == 0) return;
    connection.outstanding += added;
    outstanding_total_ += added;
    stats_->sent += added;
    connection.batch_sent_ns = now_ns;
    std::string ignored;
    Flush(connection, &ignored);
  }

  bool Flush(Connection& connection, std::string* error) {
    while (connection.out_sent < connection.out.size()) {
      ssize_t n = write(connection.fd, connection.out.data() + connection.out_sent,
                        connection.out.size() - connection.out_sent);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        *error = wallet::StrCat("write: ", std::strerror(errno));
        return false;
      }
      connection.out_sent += static_cast<size_t>(n);
    }
    bool pending = connection.out_sent < connection.out.size();
    if (!pending) {
      connection.out.clear();
      connection.out_sent = 0;
    }
    if (pending != connection.writing) {
      struct epoll_event event;
      std::memset(&event, 0, sizeof(event));
      event.events = pending ? (EPOLLIN | EPOLLOUT) : EPOLLIN;
      event.data.ptr = &connection;
      epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, connection.fd, &event);
      connection.writing = pending;
    }
    return true;
  }

  bool ReadReplies(Connection& connection, std::string* error) {
    char buffer[16 * 1024];
    for (;;) {
      ssize_t n = read(connection.fd, buffer, sizeof(buffer));
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        *error = wallet::StrCat("read: ", std::strerror(errno));
        return false;
      }
      if (n == 0) {
        *error = "the server closed a connection";
        return false;
      }
      int64_t now_ns = MonotonicNs();
      if (redisReaderFeed(connection.reader, buffer, static_cast<size_t>(n)) != REDIS_OK) {
        *error = "reply buffer error";
        return false;
      }
      for (;;) {
        void* reply = nullptr;
        if (redisReaderGetReply(connection.reader, &reply) != REDIS_OK) {
          *error = wallet::StrCat("malformed reply: ", connection.reader->errstr);
          return false;
        }
        if (reply == nullptr) break;
        OnReply(connection, *static_cast<redisReply*>(reply), now_ns);
        freeReplyObject(reply);
      }
      if (connection.outstanding == 0) SendBatch(connection, now_ns);
      if (static_cast<size_t>(n) < sizeof(buffer)) break;
    }
    return true;
  }

  void OnReply(Connection& connection, const redisReply& reply, int64_t now_ns) {
    if (connection.outstanding > 0) {
      --connection.outstanding;
      --outstanding_total_;
    }
    ++stats_->replies;
    bool counted = in_window_ && now_ns >= window_start_ns_ && now_ns < window_end_ns_;
    if (counted) {
      ++stats_->measured_replies;
      stats_->latency.Add(now_ns - connection.batch_sent_ns);
    }
    if (reply.type == REDIS_REPLY_ERROR) {
      std::string_view text(reply.str, reply.len);
      std::string code(text.substr(0, std::min<size_t>(text.find(' '), 48)));
      ++stats_->errors[code];
      if (counted) ++stats_->measured_errors[code];
      return;
    }
    if (counted) ++stats_->measured_ok;
    workload_->OnValue(reply);
  }

  std::string host_;
  int port_;
  int connection_count_;
  int pipeline_;
  int epoll_fd_ = -1;
  std::vector<Connection> connections_;
  Workload* workload_ = nullptr;
  PhaseStats* stats_ = nullptr;
  bool exhausted_ = false;
  bool stopping_ = false;
  bool in_window_ = false;
  int64_t window_start_ns_ = 0;
  int64_t window_end_ns_ = 0;
  uint64_t outstanding_total_ = 0;
};

// ---------------------------------------------------------------------------
// Helpers over a plain blocking hiredis connection (script loading, AUDIT, INFO).

redisContext* ConnectBlocking(const std::string& host, int port, std::string* error) {
  redisContext* context = redisConnect(host.c_str(), port);
  if (context == nullptr || context->err != 0) {
    *error = wallet::StrCat("connect ", host, ":", port, ": ",
                            context != nullptr ? context->errstr : "out of memory");
    if (context != nullptr) redisFree(context);
    return nullptr;
  }
  return context;
}

// True when the reply to `command` (an INFO) is text holding `needle`.
bool InfoContains(redisContext* context, const char* command, const char* needle) {
  auto* info = static_cast<redisReply*>(redisCommand(context, command));
  bool found = info != nullptr && info->type == REDIS_REPLY_STRING && std::strstr(info->str, needle) != nullptr;
  if (info != nullptr) freeReplyObject(info);
  return found;
}

std::string ErrorsText(const std::map<std::string, uint64_t>& errors) {
  if (errors.empty()) return "none";
  std::string out;
  for (const auto& [code, count] : errors) {
    if (!out.empty()) out += ',';
    wallet::StrAppend(&out, code, ":", count);
  }
  return out;
}

uint64_t ErrorCount(const std::map<std::string, uint64_t>& errors) {
  uint64_t total = 0;
  for (const auto& [code, count] : errors) total += count;
  return total;
}

std::string Int128Text(__int128 value) {
  if (value == 0) return "0";
  bool negative = value < 0;
  unsigned __int128 magnitude = negative ? -static_cast<unsigned __int128>(value)
                                         : static_cast<unsigned __int128>(value);
  std::string digits;
  while (magnitude > 0) {
    digits.push_back(static_cast<char>('0' + static_cast<int>(magnitude % 10)));
    magnitude /= 10;
  }
  if (negative) digits.push_back('-');
  std::reverse(digits.begin(), digits.end());
  return digits;
}

std::string RandomPrefix() {
  std::random_device device;
  char text[16];
  std::snprintf(text, sizeof(text), "%08x", static_cast<unsigned>(device()));
  return text;
}

// Learns which shard owns each account: `PARTITION <account>` ([partition, owned 0/1])
// to every shard of `ports`, pipelined. Exactly one shard must own each account.
bool LearnOwners(const std::string& host, const std::vector<int>& ports, uint64_t first,
                 uint64_t count, TransferWorkload::Groups* groups, std::string* error) {
  groups->accounts.assign(ports.size(), {});
  groups->owner.assign(count, UINT32_MAX);
  constexpr uint64_t kBatch = 4096;
  for (uint32_t shard = 0; shard < ports.size(); ++shard) {
    redisContext* context = ConnectBlocking(host, ports[shard], error);
    if (context == nullptr) return false;
    for (uint64_t start = 0; start < count; start += kBatch) {
      const uint64_t end = std::min(count, start + kBatch);
      for (uint64_t i = start; i < end; ++i) {
        std::string id = std::to_string(first + i);
        redisAppendCommand(context, "PARTITION %s", id.c_str());
      }
      for (uint64_t i = start; i < end; ++i) {
        void* raw = nullptr;
        if (redisGetReply(context, &raw) != REDIS_OK || raw == nullptr) {
          *error = wallet::StrCat("PARTITION on port ", ports[shard], ": ", context->errstr);
          redisFree(context);
          return false;
        }
        auto* reply = static_cast<redisReply*>(raw);
        bool ok = reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
                  reply->element[1]->type == REDIS_REPLY_INTEGER;
        bool owned = ok && reply->element[1]->integer == 1;
        if (!ok) {
          *error = wallet::StrCat("PARTITION ", first + i, " on port ", ports[shard], ": unexpected reply",
                                  reply->type == REDIS_REPLY_ERROR ? wallet::StrCat(" ", reply->str) : "");
        }
        freeReplyObject(reply);
        if (!ok) {
          redisFree(context);
          return false;
        }
        if (!owned) continue;
        if (groups->owner[i] != UINT32_MAX) {
          *error = wallet::StrCat("account ", first + i, " is owned by two shards");
          redisFree(context);
          return false;
        }
        groups->owner[i] = shard;
        groups->accounts[shard].push_back(i);
      }
    }
    redisFree(context);
  }
  for (uint64_t i = 0; i < count; ++i) {
    if (groups->owner[i] == UINT32_MAX) {
      *error = wallet::StrCat("account ", first + i, " is owned by none of the shards");
      return false;
    }
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "wallet-shard-bench: pipelined transfer load against wallet-shard or redis-server "
      "(Lua transfer script), same client settings for both.\n"
      "Usage: wallet-shard-bench --target=wallet|redis|ping --port=P [--connections=50] "
      "[--pipeline=32] [--accounts=100000] [--duration_s=10] [--phases=setup,run,verify]");
  absl::ParseCommandLine(argc, argv);
  if (absl::GetFlag(FLAGS_print_lua)) {
    std::fputs(kTransferLua, stdout);
    return 0;
  }
  const std::string target_name = absl::GetFlag(FLAGS_target);
  Target target;
  if (target_name == "wallet") {
    target = Target::kWallet;
  } else if (target_name == "redis") {
    target = Target::kRedis;
  } else if (target_name == "ping") {
    target = Target::kPing;
  } else {
    std::fprintf(stderr, "--target must be wallet, redis or ping\n");
    return 2;
  }
  const std::string host = absl::GetFlag(FLAGS_host);
  const int port = absl::GetFlag(FLAGS_port);
  const int connections = absl::GetFlag(FLAGS_connections);
  const int pipeline = absl::GetFlag(FLAGS_pipeline);
  const uint64_t accounts = absl::GetFlag(FLAGS_accounts);
  const int key_pad = absl::GetFlag(FLAGS_redis_key_pad);
  std::string prefix = absl::GetFlag(FLAGS_txid_prefix);
  if (prefix.empty()) prefix = RandomPrefix();
  if (connections < 1 || connections > 10'000 || pipeline < 1 || pipeline > 100'000 ||
      accounts < 2 || absl::GetFlag(FLAGS_max_amount) < 1 || prefix.size() > 40 ||
      key_pad < 0 || key_pad > 20) {
    std::fprintf(stderr,
                 "need 1 <= connections <= 10000, 1 <= pipeline <= 100000, accounts >= 2, "
                 "max_amount >= 1, txid_prefix <= 40 chars, 0 <= redis_key_pad <= 20\n");
    return 2;
  }
  std::vector<std::string> phases;
  {
    std::string text = absl::GetFlag(FLAGS_phases);
    size_t start = 0;
    while (start <= text.size()) {
      size_t comma = text.find(',', start);
      if (comma == std::string::npos) comma = text.size();
      if (comma > start) phases.push_back(text.substr(start, comma - start));
      start = comma + 1;
    }
  }
  for (const std::string& phase : phases) {
    if (phase != "open" && phase != "setup" && phase != "run" && phase != "verify") {
      std::fprintf(stderr, "unknown phase '%s' (open, setup, run, verify)\n", phase.c_str());
      return 2;
    }
  }
  if (target == Target::kPing) phases = {"run"};  // PING has nothing to set up or verify

  // --pairs, --shard_ports, --transfer_mode (cluster workloads through a router).
  const std::string pairs_name = absl::GetFlag(FLAGS_pairs);
  const std::string transfer_mode = absl::GetFlag(FLAGS_transfer_mode);
  TransferWorkload::PairMode pair_mode;
  if (pairs_name == "any") {
    pair_mode = TransferWorkload::PairMode::kAny;
  } else if (pairs_name == "same") {
    pair_mode = TransferWorkload::PairMode::kSame;
  } else if (pairs_name == "cross") {
    pair_mode = TransferWorkload::PairMode::kCross;
  } else {
    std::fprintf(stderr, "--pairs must be any, same or cross\n");
    return 2;
  }
  if (!transfer_mode.empty() && transfer_mode != "tcc" && transfer_mode != "saga") {
    std::fprintf(stderr, "--transfer_mode must be tcc, saga or empty\n");
    return 2;
  }
  if ((pair_mode != TransferWorkload::PairMode::kAny || !transfer_mode.empty()) && target != Target::kWallet) {
    std::fprintf(stderr, "--pairs=same|cross and --transfer_mode need --target=wallet\n");
    return 2;
  }
  TransferWorkload::Groups groups;
  const bool runs = std::find(phases.begin(), phases.end(), "run") != phases.end();
  if (pair_mode != TransferWorkload::PairMode::kAny && runs) {
    std::vector<int> ports;
    std::string text = absl::GetFlag(FLAGS_shard_ports);
    size_t start = 0;
    while (start < text.size()) {
      size_t comma = text.find(',', start);
      if (comma == std::string::npos) comma = text.size();
      if (comma > start) ports.push_back(std::atoi(text.substr(start, comma - start).c_str()));
      start = comma + 1;
    }
    if (ports.empty()) {
      std::fprintf(stderr, "--pairs=%s needs --shard_ports\n", pairs_name.c_str());
      return 2;
    }
    std::string learn_error;
    if (!LearnOwners(absl::GetFlag(FLAGS_host), ports, absl::GetFlag(FLAGS_first_account), accounts,
                     &groups, &learn_error)) {
      std::fprintf(stderr, "learning the accounts' shards: %s\n", learn_error.c_str());
      return 1;
    }
    std::string sizes;
    for (const std::vector<uint64_t>& group : groups.accounts) {
      wallet::StrAppend(&sizes, sizes.empty() ? "" : ",", group.size());
    }
    // same: every account's shard needs another account; cross: two shards with accounts.
    bool usable = true;
    for (const std::vector<uint64_t>& group : groups.accounts) {
      if (pair_mode == TransferWorkload::PairMode::kSame && group.size() == 1) usable = false;
      if (pair_mode == TransferWorkload::PairMode::kCross && group.size() == accounts) usable = false;
    }
    if (!usable) {
      std::fprintf(stderr, "--pairs=%s: accounts per shard %s: no such pairs for some accounts\n",
                   pairs_name.c_str(), sizes.c_str());
      return 2;
    }
    std::fprintf(stderr, "pairs: %s; accounts per shard (in --shard_ports order): %s\n", pairs_name.c_str(),
                 sizes.c_str());
  }

  std::string error;
  // A control connection: checks that the server is the one we think it is, loads
  // the script, and reads AUDIT at the end. It stays open for the whole run, so the
  // driver never closes a connection while it opens others (wallet-shard before
  // 4387bad lost a connection accepted in the same loop turn as a close).
  redisContext* control = ConnectBlocking(host, port, &error);
  if (control == nullptr) {
    std::fprintf(stderr, "%s\n", error.c_str());
    return 1;
  }
  std::string sha;
  {
    // wallet-shard names its version in INFO server; wallet-router, which takes the
    // same OPEN, DEPOSIT, TRANSFER and BALANCE (not AUDIT), its id in INFO router.
    bool is_wallet = InfoContains(control, "INFO server", "wallet_version:") ||
                     InfoContains(control, "INFO router", "router_id:");
    if ((target == Target::kWallet && !is_wallet) || (target == Target::kRedis && is_wallet)) {
      std::fprintf(stderr, "the server at %s:%d is %s, not what --target=%s expects\n",
                   host.c_str(), port, is_wallet ? "wallet-shard or wallet-router" : "not a wallet server",
                   target_name.c_str());
      return 1;
    }
    if (target == Target::kRedis) {
      auto* reply = static_cast<redisReply*>(redisCommand(control, "SCRIPT LOAD %s", kTransferLua));
      if (reply == nullptr || reply->type != REDIS_REPLY_STRING) {
        std::fprintf(stderr, "SCRIPT LOAD failed: %s\n",
                     reply != nullptr && reply->str != nullptr ? reply->str : control->errstr);
        return 1;
      }
      sha.assign(reply->str, reply->len);
      freeReplyObject(reply);
    }
  }

  Driver driver(host, port, connections, pipeline);
  if (!driver.Connect(&error)) {
    std::fprintf(stderr, "%s\n", error.c_str());
    return 1;
  }
  std::printf("CONFIG target=%s port=%d connections=%d pipeline=%d accounts=%" PRIu64
              " duration_s=%g warmup_s=%g txid_prefix=%s redis_key_pad=%d pairs=%s transfer_mode=%s\n",
              target_name.c_str(), port, connections, pipeline, accounts,
              absl::GetFlag(FLAGS_duration_s), absl::GetFlag(FLAGS_warmup_s), prefix.c_str(),
              key_pad, pairs_name.c_str(), transfer_mode.empty() ? "none" : transfer_mode.c_str());
  std::fflush(stdout);

  int exit_code = 0;
  for (const std::string& phase : phases) {
    PhaseStats stats;
    if (phase == "open" || phase == "setup") {
      SetupWorkload workload(target, /*fund=*/phase == "setup", key_pad);
      if (!driver.Run(workload, 0, 0, 0, phase.c_str(), &stats, &error)) {
        std::fprintf(stderr, "%s failed: %s\n", phase.c_str(), error.c_str());
        return 1;
      }
      std::printf("RESULT phase=%s target=%s commands=%" PRIu64 " seconds=%.2f per_s=%.0f errors=%s\n",
                  phase.c_str(), target_name.c_str(), stats.replies, stats.measured_s,
                  static_cast<double>(stats.replies) / stats.measured_s,
                  ErrorsText(stats.errors).c_str());
      if (ErrorCount(stats.errors) != 0) {
        std::fprintf(stderr, "%s: errors: %s\n", phase.c_str(), ErrorsText(stats.errors).c_str());
        return 1;
      }
    } else if (phase == "run") {
      const uint64_t requests = absl::GetFlag(FLAGS_requests);
      TransferWorkload workload(target, sha, prefix, key_pad, requests, pair_mode, &groups, transfer_mode);
      int server_pid = absl::GetFlag(FLAGS_server_pid);
      double warmup_s = requests != 0 ? 0 : absl::GetFlag(FLAGS_warmup_s);
      double duration_s = requests != 0 ? 0 : absl::GetFlag(FLAGS_duration_s);
      if (!driver.Run(workload, warmup_s, duration_s, server_pid, "run", &stats, &error)) {
        std::fprintf(stderr, "run failed: %s\n", error.c_str());
        return 1;
      }
      double per_s = static_cast<double>(stats.measured_replies) / stats.measured_s;
      double driver_cores = stats.driver_cpu_s / stats.measured_s;
      double server_cores = stats.server_cpu_s < 0 ? -1.0 : stats.server_cpu_s / stats.measured_s;
      double other_cores = -1;
      if (stats.machine_busy_s >= 0) {
        other_cores = (stats.machine_busy_s - stats.driver_cpu_s -
                       (stats.server_cpu_s < 0 ? 0 : stats.server_cpu_s)) / stats.measured_s;
        if (other_cores < 0) other_cores = 0;
      }
      double ok_per_s = static_cast<double>(stats.measured_ok) / stats.measured_s;
      std::fprintf(stderr,
                   "run: %s, %d connections x pipeline %d: %.0f replies/s (%.0f ok/s), p50 %" PRId64
                   " us, p99 %" PRId64 " us, errors %s; CPU cores: driver %.2f, server %.2f, "
                   "everything else %.2f\n",
                   target_name.c_str(), connections, pipeline, per_s, ok_per_s,
                   stats.latency.PercentileUs(0.50), stats.latency.PercentileUs(0.99),
                   ErrorsText(stats.measured_errors).c_str(), driver_cores, server_cores, other_cores);
      std::printf("RESULT phase=run target=%s per_s=%.0f ok_per_s=%.0f p50_us=%" PRId64
                  " p99_us=%" PRId64 " p999_us=%" PRId64 " p9999_us=%" PRId64 " max_us=%" PRId64
                  " replies=%" PRIu64
                  " errors=%s seconds=%.2f driver_cpu=%.2f server_cpu=%.2f other_cpu=%.2f"
                  " sent_total=%" PRIu64 "\n",
                  target_name.c_str(), per_s, ok_per_s, stats.latency.PercentileUs(0.50),
                  stats.latency.PercentileUs(0.99), stats.latency.PercentileUs(0.999),
                  stats.latency.PercentileUs(0.9999), stats.latency.max_us(), stats.measured_replies, ErrorsText(stats.measured_errors).c_str(),
                  stats.measured_s, driver_cores, server_cores, other_cores, stats.sent);
    } else {  // verify
      VerifyWorkload workload(target, key_pad);
      if (!driver.Run(workload, 0, 0, 0, "verify", &stats, &error)) {
        std::fprintf(stderr, "verify failed: %s\n", error.c_str());
        return 1;
      }
      __int128 expected = static_cast<__int128>(accounts) * absl::GetFlag(FLAGS_initial_balance);
      bool conserved = workload.total() == expected && workload.accounts_seen() == accounts &&
                       ErrorCount(stats.errors) == 0 && workload.malformed() == 0;
      std::string audit = "n/a";
      if (target == Target::kWallet) {
        // The shard's own running totals (AUDIT), as a second opinion.
        auto* reply = static_cast<redisReply*>(redisCommand(control, "AUDIT"));
        if (reply != nullptr && reply->type == REDIS_REPLY_ARRAY) {
          audit.clear();
          for (size_t i = 0; i + 1 < reply->elements; i += 2) {
            const redisReply* name = reply->element[i];
            const redisReply* value = reply->element[i + 1];
            std::string value_text = value->type == REDIS_REPLY_INTEGER
                                         ? std::to_string(value->integer)
                                         : std::string(value->str != nullptr ? value->str : "");
            wallet::StrAppend(&audit, audit.empty() ? "" : ",",
                              std::string_view(name->str, name->len), ":", value_text);
          }
        }
        if (reply != nullptr) freeReplyObject(reply);
      }
      std::fprintf(stderr, "verify: %s: %" PRIu64 " accounts, sum %s, expected %s: %s\n",
                   target_name.c_str(), workload.accounts_seen(), Int128Text(workload.total()).c_str(),
                   Int128Text(expected).c_str(), conserved ? "money conserved" : "NOT CONSERVED");
      std::printf("RESULT phase=verify target=%s accounts=%" PRIu64 " sum=%s expected=%s conserved=%d"
                  " missing=%" PRIu64 " errors=%s audit=%s\n",
                  target_name.c_str(), workload.accounts_seen(), Int128Text(workload.total()).c_str(),
                  Int128Text(expected).c_str(), conserved ? 1 : 0, workload.missing(),
                  ErrorsText(stats.errors).c_str(), audit.c_str());
      if (!conserved) exit_code = 3;
    }
    std::fflush(stdout);
  }
  redisFree(control);
  return exit_code;
}
