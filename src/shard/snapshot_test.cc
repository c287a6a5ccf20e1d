// Tests for snapshot files (snapshot.h): write, list, load and header round trips;
// damage anywhere (a flipped byte, a cut or extended file, a header that lies about
// the state) is refused with DataLoss naming the file; .tmp files are ignored and
// cleaned up; failed writes leave nothing behind. Each test works in its own
// folder under /tmp, removed in TearDown.
#include "shard/snapshot.h"

#include <stdlib.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/crc32c.h"
#include "common/money.h"
#include "common/partition.h"
#include "common/strings.h"
#include "gtest/gtest.h"
#include "shard/engine.h"

namespace wallet::shard {
namespace {

constexpr uint32_t kPartitions = 8;
constexpr int64_t kT0Ms = 5'000'000;
// Header offsets (grammar in snapshot.cc): the digest follows magic, version,
// header length, last_seq, time, partition count and three counts.
constexpr size_t kDigestOffset = 8 + 4 + 4 + 8 + 8 + 4 + 3 * 8;

EngineOptions SmallOptions() {
  EngineOptions options;
  options.partition_count = kPartitions;
  options.idempotency_window_ms = 1000;
  return options;
}

PartitionSet Owned() {
  PartitionSet owned(kPartitions);
  owned.AddRange(0, 5);
  return owned;
}

std::unique_ptr<Engine> EmptyEngine() { return std::make_unique<Engine>(SmallOptions(), Owned()); }

std::string ReadAll(const std::string& path) {
  std::string bytes(std::filesystem::file_size(path), '\0');
  FILE* file = std::fopen(path.c_str(), "rb");
  EXPECT_NE(file, nullptr) << path;
  if (file == nullptr) return "";
  EXPECT_EQ(std::fread(bytes.data(), 1, bytes.size(), file), bytes.size()) << path;
  std::fclose(file);
  return bytes;
}

void WriteAllBytes(const std::string& path, const std::string& bytes) {
  FILE* file = std::fopen(path.c_str(), "wb");
  ASSERT_NE(file, nullptr) << path;
  EXPECT_EQ(std::fwrite(bytes.data(), 1, bytes.size(), file), bytes.size()) << path;
  std::fclose(file);
}

bool Mentions(const absl::Status& status, const std::string& text) {
  return FromAbsl(status.message()).find(text) != std::string_view::npos;
}

class Snapshot : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/snapshot_test.XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
    engine_ = EmptyEngine();
    Fill(*engine_);
  }
  void TearDown() override {
    std::error_code error;
    std::filesystem::remove_all(dir_, error);
  }

  // Owned accounts with money, local records (one collected), a TC/C hold with its
  // home row under lease, a fence and a finished saga step.
  static void Fill(Engine& engine) {
    Currency usd, jpy;
    ASSERT_TRUE(Currency::Parse("USD", &usd) && Currency::Parse("JPY", &jpy));
    std::vector<AccountId> ids;
    for (AccountId id = 1; ids.size() < 12; ++id) {
      if (engine.owned_partitions().ContainsAccount(id)) ids.push_back(id);
    }
    int64_t now_ms = kT0Ms;
    for (size_t i = 0; i < ids.size(); ++i) {
      ASSERT_TRUE(engine.Open(ids[i], i % 3 == 0 ? jpy : usd, now_ms).ok());
      ASSERT_TRUE(engine.Deposit(StrCat("in-", i), ids[i], 1000 + static_cast<Amount>(i), now_ms).ok());
    }
    now_ms += 2000;
    ASSERT_EQ(engine.Collect(now_ms, 1), 1u);
    const RowSpec row{Mode::kTcc, ids[1], 999, 300, usd};
    ASSERT_TRUE(engine.TccTry("hold", Direction::kDebit, ids[1], 300, usd, &row, now_ms).ok());
    ASSERT_TRUE(engine.RowClaim("hold", "resolver-1", 5000, now_ms).ok());
    ASSERT_EQ(engine.TccCancel("late", Direction::kCredit, now_ms).note, Result::Note::kEmptyRollback);
    ASSERT_TRUE(engine.SagaStep("saga", 1, Direction::kCredit, ids[2], 40, usd, nullptr, now_ms).ok());
    ASSERT_TRUE(engine.Transfer("move", ids[1], ids[2], 5, usd, now_ms + 1).ok());
  }

  std::string Write(uint64_t last_seq) {
    absl::StatusOr<SnapshotInfo> info = WriteSnapshot(*engine_, last_seq, dir_);
    EXPECT_TRUE(info.ok()) << info.status();
    return info.ok() ? info->path : "";
  }

  std::vector<std::string> FilesInDir() const {
    std::vector<std::string> names;
    for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
      names.push_back(entry.path().filename().string());
    }
    std::sort(names.begin(), names.end());
    return names;
  }

  std::vector<uint64_t> ListedSeqs() const {
    absl::StatusOr<std::vector<SnapshotInfo>> listed = ListSnapshots(dir_);
    EXPECT_TRUE(listed.ok()) << listed.status();
    std::vector<uint64_t> seqs;
    if (listed.ok()) {
      for (const SnapshotInfo& info : *listed) seqs.push_back(info.last_seq);
    }
    return seqs;
  }

  // Loads `path` into a fresh engine and returns the status.
  static absl::Status LoadStatus(const std::string& path) {
    std::unique_ptr<Engine> engine = EmptyEngine();
    return LoadSnapshot(path, engine.get()).status();
  }

  std::string dir_;
  std::unique_ptr<Engine> engine_;
};

TEST_F(Snapshot, WriteListLoadRoundTrip) {
  const std::string path = Write(42);
  EXPECT_EQ(path, dir_ + "/snapshot-00000000000000000042.snap");
  EXPECT_EQ(FilesInDir(), std::vector<std::string>{"snapshot-00000000000000000042.snap"});
  absl::StatusOr<std::vector<SnapshotInfo>> listed = ListSnapshots(dir_);
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].path, path);
  EXPECT_EQ((*listed)[0].last_seq, 42u);

  std::unique_ptr<Engine> loaded = EmptyEngine();
  absl::StatusOr<SnapshotInfo> info = LoadSnapshot(path, loaded.get());
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->last_seq, 42u);
  EXPECT_EQ(loaded->Digest(), engine_->Digest());
  EXPECT_EQ(loaded->stats().records_created, engine_->stats().records_created);
  EXPECT_EQ(loaded->stats().records_collected, 1u);
  std::string error;
  EXPECT_TRUE(loaded->CheckInvariants(&error)) << error;
  // The loaded engine answers as the original: the hold is still leased.
  EXPECT_EQ(loaded->RowClaim("hold", "resolver-2", 100, kT0Ms + 2500).code, ResultCode::kLeased);
}

TEST_F(Snapshot, HeaderRecordsWhatTheStateIs) {
  const std::string path = Write(7);
  absl::StatusOr<SnapshotInfo> info = ReadSnapshotHeader(path);
  ASSERT_TRUE(info.ok()) << info.status();
  const EngineStats stats = engine_->stats();
  EXPECT_EQ(info->path, path);
  EXPECT_EQ(info->format_version, 1u);
  EXPECT_EQ(info->last_seq, 7u);
  EXPECT_EQ(info->last_event_time_ms, engine_->last_event_time_ms());
  EXPECT_EQ(info->partition_count, kPartitions);
  EXPECT_EQ(info->owned_partitions, "0-5");
  EXPECT_EQ(info->accounts, 12u);
  EXPECT_EQ(info->local_records, stats.local_records);
  EXPECT_EQ(info->distributed_records, 3u);
  EXPECT_EQ(info->digest, engine_->Digest());
  EXPECT_EQ(info->file_bytes, std::filesystem::file_size(path));
  // What WriteSnapshot returned is what the header says.
  absl::StatusOr<SnapshotInfo> again = WriteSnapshot(*engine_, 7, dir_);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->digest, info->digest);
  EXPECT_EQ(again->file_bytes, info->file_bytes);
}

TEST_F(Snapshot, FlippedByteAnywhereIsDataLossNamingTheFile) {
  const std::string good = ReadAll(Write(9));
  const std::string path = dir_ + "/damaged.snap";
  for (size_t pos = 0; pos < good.size(); ++pos) {
    std::string bad = good;
    bad[pos] = static_cast<char>(bad[pos] ^ 0x10);
    WriteAllBytes(path, bad);
    const absl::Status status = LoadStatus(path);
    ASSERT_EQ(status.code(), absl::StatusCode::kDataLoss) << "byte " << pos << ": " << status;
    ASSERT_TRUE(Mentions(status, path)) << status;
    ASSERT_TRUE(Mentions(status, "at byte")) << status;
  }
}

TEST_F(Snapshot, TruncatedOrExtendedFileIsRefused) {
  const std::string good = ReadAll(Write(9));
  const std::string path = dir_ + "/cut.snap";
  for (size_t size = 0; size < good.size(); ++size) {
    WriteAllBytes(path, good.substr(0, size));
    const absl::Status status = LoadStatus(path);
    ASSERT_EQ(status.code(), absl::StatusCode::kDataLoss) << size << " bytes: " << status;
    ASSERT_TRUE(Mentions(status, path)) << status;
    ASSERT_FALSE(ReadSnapshotHeader(path).ok()) << size << " bytes";
  }
  WriteAllBytes(path, good + "x");
  EXPECT_EQ(LoadStatus(path).code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(ReadSnapshotHeader(path).status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(Snapshot, HeaderThatDisagreesWithTheStateIsDataLoss) {
  // A header whose checksum is right but whose digest is not that of the body:
  // only the digest recomputed after loading can tell.
  std::string bytes = ReadAll(Write(9));
  uint32_t header_bytes;
  std::memcpy(&header_bytes, bytes.data() + 12, 4);
  bytes[kDigestOffset] = static_cast<char>(bytes[kDigestOffset] ^ 1);
  const uint32_t crc = Crc32c(bytes.data(), header_bytes - 4);
  std::memcpy(bytes.data() + header_bytes - 4, &crc, 4);
  const std::string path = dir_ + "/lying.snap";
  WriteAllBytes(path, bytes);
  ASSERT_TRUE(ReadSnapshotHeader(path).ok());
  const absl::Status status = LoadStatus(path);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  EXPECT_TRUE(Mentions(status, "digest")) << status;
}

TEST_F(Snapshot, OtherPartitionCountIsFailedPrecondition) {
  const std::string path = Write(3);
  EngineOptions options = SmallOptions();
  options.partition_count = kPartitions * 4;
  Engine other(options, PartitionSet::All(options.partition_count));
  const absl::Status status = LoadSnapshot(path, &other).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_TRUE(Mentions(status, path)) << status;
}

TEST_F(Snapshot, ListIgnoresTmpAndOtherFilesAndSortsBySeq) {
  Write(100);
  Write(7);
  Write(30);
  WriteAllBytes(dir_ + "/snapshot-00000000000000000200.snap.tmp", "partial");
  WriteAllBytes(dir_ + "/snapshot-12.snap", "bad name");
  WriteAllBytes(dir_ + "/notes.txt", "other");
  EXPECT_EQ(ListedSeqs(), (std::vector<uint64_t>{7, 30, 100}));
}

TEST_F(Snapshot, RemoveOldSnapshotsKeepsTheNewestAndDropsTmpFiles) {
  for (uint64_t seq : {5, 1, 4, 2, 3}) Write(seq);
  WriteAllBytes(dir_ + "/snapshot-00000000000000000009.snap.tmp", "left by a crash");
  WriteAllBytes(dir_ + "/notes.txt", "not ours");
  absl::StatusOr<uint64_t> oldest_kept = RemoveOldSnapshots(dir_, 2);
  ASSERT_TRUE(oldest_kept.ok()) << oldest_kept.status();
  EXPECT_EQ(*oldest_kept, 4u);
  EXPECT_EQ(FilesInDir(), (std::vector<std::string>{"notes.txt", "snapshot-00000000000000000004.snap",
                                                     "snapshot-00000000000000000005.snap"}));
  EXPECT_EQ(RemoveOldSnapshots(dir_, 0).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(Snapshot, RemoveOldSnapshotsInAnEmptyFolderKeepsNothing) {
  absl::StatusOr<uint64_t> oldest_kept = RemoveOldSnapshots(dir_, 3);
  ASSERT_TRUE(oldest_kept.ok()) << oldest_kept.status();
  EXPECT_EQ(*oldest_kept, 0u);
}

TEST_F(Snapshot, WriteIntoAMissingFolderFailsAndLeavesNothing) {
  const std::string missing = dir_ + "/no-such-folder";
  absl::StatusOr<SnapshotInfo> info = WriteSnapshot(*engine_, 1, missing);
  ASSERT_FALSE(info.ok());
  EXPECT_EQ(info.status().code(), absl::StatusCode::kNotFound) << info.status();
  EXPECT_TRUE(Mentions(info.status(), missing)) << info.status();
  EXPECT_TRUE(FilesInDir().empty());
  EXPECT_FALSE(ListSnapshots(missing).ok());
}

TEST_F(Snapshot, FailedRenameRemovesTheTempFile) {
  // A folder where the snapshot should go makes the rename fail after the data
  // was written and synced.
  const std::string path = SnapshotPath(dir_, 11);
  ASSERT_EQ(mkdir(path.c_str(), 0755), 0);
  absl::StatusOr<SnapshotInfo> info = WriteSnapshot(*engine_, 11, dir_);
  ASSERT_FALSE(info.ok());
  EXPECT_TRUE(Mentions(info.status(), "rename")) << info.status();
  EXPECT_EQ(FilesInDir(), std::vector<std::string>{"snapshot-00000000000000000011.snap"});
  EXPECT_TRUE(std::filesystem::is_directory(path));
}

TEST_F(Snapshot, LoadOfAMissingFileIsNotFound) {
  const absl::Status status = LoadStatus(dir_ + "/snapshot-00000000000000000001.snap");
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << status;
}

}  // namespace
}  // namespace wallet::shard
