// Tests for the event log: the on-disk format (log_format.h), the writer's group
// commit, fsync policies, segment rolling, failure and retry (log_writer.h), and the
// reader's delivery, torn-tail and damage rules (log_reader.h).
//
// Every test works in its own mkdtemp folder under /tmp, removed in TearDown. The
// event logged with sequence number `seq` is always SampleEvent(seq), so a reader's
// output can be checked field by field against what was written.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <initializer_list>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <ostream>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/crc32c.h"
#include "common/money.h"
#include "common/strings.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "shard/event_codec.h"
#include "shard/events.h"
#include "shard/log_format.h"
#include "shard/log_reader.h"
#include "shard/log_writer.h"

namespace wallet::shard {

// Defined in event_codec_test.cc: every field of an event as text.
std::string EventToString(const Event& event);

namespace {

using ::testing::AssertionFailure;
using ::testing::AssertionResult;
using ::testing::AssertionSuccess;
using ::testing::HasSubstr;

constexpr uint64_t kSegmentBytes = 8192;
constexpr int64_t kStartMs = 1'000'000;
constexpr size_t kHeader = logfmt::kFileHeaderBytes;
constexpr size_t kRecordHeader = logfmt::kRecordHeaderBytes;

// ---------------------------------------------------------------------------------
// The events the tests log.

// The event logged as `seq`: types, field values and sizes vary with seq so that
// records differ in length and several codec paths are used. *txid and *text hold
// the strings the event views.
Event SampleEvent(uint64_t seq, std::string* txid, std::string* text) {
  *txid = StrCat("tx-", seq, "-", std::string(seq % 40, 'x'));
  *text = StrCat("owner-", std::string(seq % 50, 'o'));
  constexpr EventType kTypes[] = {EventType::kOpen, EventType::kDeposit, EventType::kTransfer,
                                  EventType::kRowClaim, EventType::kRowUpdate};
  const EventType type = kTypes[seq % 5];
  const auto is = [type](std::initializer_list<EventType> types) {
    return std::find(types.begin(), types.end(), type) != types.end();
  };
  // Only the fields the type carries (events.h): the decoder leaves the others zero.
  Event event;
  event.type = type;
  event.time_ms = kStartMs + static_cast<int64_t>(seq);
  if (type != EventType::kOpen) event.txid = *txid;
  if (is({EventType::kOpen, EventType::kDeposit, EventType::kTransfer})) event.account = seq;
  if (type == EventType::kTransfer) event.peer = seq + 1;
  if (is({EventType::kDeposit, EventType::kTransfer, EventType::kRowClaim})) {
    event.amount = static_cast<Amount>(seq * 3 + 1);
  }
  if (is({EventType::kOpen, EventType::kTransfer})) {
    event.currency = Currency::FromPacked(static_cast<uint16_t>(1 + seq % 17576));
  }
  if (type == EventType::kRowClaim) event.text = *text;
  if (type == EventType::kRowUpdate) {
    event.row_update.mask = static_cast<uint16_t>(seq & 0x3ff);
    event.row_update.phase = static_cast<RowPhase>(seq % 5);
    event.row_update.attempts_added = static_cast<uint32_t>(seq);
  }
  return event;
}

std::string ExpectedEvent(uint64_t seq) {
  std::string txid, text;
  return EventToString(SampleEvent(seq, &txid, &text));
}

// Appends the samples for the writer's next `count` sequence numbers (no commit).
void AppendSamples(LogWriter& writer, uint64_t count) {
  for (uint64_t i = 0; i < count; ++i) {
    std::string txid, text;
    writer.Append(SampleEvent(writer.last_seq() + 1, &txid, &text));
  }
}

// Appends samples through `last`, committing every `per_commit` of them at now_ms.
void CommitSamplesThrough(LogWriter& writer, uint64_t last, uint64_t per_commit = 7,
                          int64_t now_ms = kStartMs) {
  while (writer.last_seq() < last) {
    AppendSamples(writer, std::min(per_commit, last - writer.last_seq()));
    const absl::Status status = writer.Commit(now_ms);
    ASSERT_TRUE(status.ok()) << status;
  }
}

// ---------------------------------------------------------------------------------
// Reading.

struct Read {
  absl::StatusOr<LogReadResult> result;
  std::vector<uint64_t> seqs;
  std::vector<std::string> events;  // EventToString of each delivered event
};

// ReadLog with a visitor that records everything and stops after `stop_at` (0: never).
Read ReadDir(const std::string& dir, const LogReadOptions& options = {}, uint64_t stop_at = 0) {
  Read read;
  read.result = ReadLog(dir, options, [&](uint64_t seq, const Event& event) {
    read.seqs.push_back(seq);
    read.events.push_back(EventToString(event));
    return seq != stop_at;
  });
  return read;
}

// The read delivered exactly the samples first..last (none when last < first), in
// order, each equal field by field to what was written.
AssertionResult DeliveredRun(const Read& read, uint64_t first, uint64_t last) {
  const uint64_t want = last >= first ? last - first + 1 : 0;
  if (read.seqs.size() != want) {
    return AssertionFailure() << "delivered " << read.seqs.size() << " events ("
                              << (read.seqs.empty() ? 0 : read.seqs.front()) << ".."
                              << (read.seqs.empty() ? 0 : read.seqs.back()) << "), expected " << want
                              << " (" << first << ".." << last << ")";
  }
  for (size_t i = 0; i < read.seqs.size(); ++i) {
    const uint64_t seq = first + i;
    if (read.seqs[i] != seq) {
      return AssertionFailure() << "event #" << i << " has seq " << read.seqs[i] << ", expected " << seq;
    }
    if (read.events[i] != ExpectedEvent(seq)) {
      return AssertionFailure() << "seq " << seq << " read back as\n  " << read.events[i]
                                << "\nwritten as\n  " << ExpectedEvent(seq);
    }
  }
  return AssertionSuccess();
}

// A read with no error, no torn tail and no damage that delivered first..last.
AssertionResult CleanRead(const Read& read, uint64_t first, uint64_t last) {
  if (!read.result.ok()) return AssertionFailure() << "read failed: " << read.result.status();
  const LogReadResult& result = *read.result;
  if (result.torn_tail) {
    return AssertionFailure() << "torn tail in " << result.tail_path << " at " << result.tail_offset;
  }
  if (result.damaged) {
    return AssertionFailure() << "damage in " << result.damage_path << " at " << result.damage_offset << ": "
                              << result.damage_reason;
  }
  if (result.last_seq != last) return AssertionFailure() << "last_seq " << result.last_seq << ", expected " << last;
  return DeliveredRun(read, first, last);
}

// ---------------------------------------------------------------------------------
// Files.

std::string ReadFileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  EXPECT_TRUE(in.good()) << "cannot read " << path;
  std::string bytes(static_cast<size_t>(std::max<std::streamoff>(in.tellg(), 0)), '\0');
  in.seekg(0);
  in.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  EXPECT_TRUE(in.good()) << "cannot read " << path;
  return bytes;
}

void WriteFileBytes(const std::string& path, std::string_view bytes, bool append = false) {
  std::ofstream out(path, std::ios::binary | (append ? std::ios::app : std::ios::trunc));
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  EXPECT_TRUE(out.good()) << "cannot write " << path;
}

uint64_t FileSize(const std::string& path) { return std::filesystem::file_size(path); }

void TruncateFile(const std::string& path, uint64_t size) { std::filesystem::resize_file(path, size); }

void PutLittleEndian(std::string* bytes, size_t offset, uint64_t value, size_t width) {
  for (size_t i = 0; i < width; ++i) (*bytes)[offset + i] = static_cast<char>((value >> (8 * i)) & 0xff);
}

void FlipByte(const std::string& path, uint64_t offset) {
  std::string bytes = ReadFileBytes(path);
  ASSERT_LT(offset, bytes.size());
  bytes[offset] = static_cast<char>(bytes[offset] ^ 0x5a);
  WriteFileBytes(path, bytes);
}

// Where a record sits in a segment, parsed independently of the reader.
struct RecordAt {
  uint64_t offset = 0;
  uint64_t bytes = 0;  // header + payload
  uint64_t seq = 0;
};

// Overwrites a field of a record's header (at field_offset from the record's start)
// and recomputes the record's checksum: damage only the reader's later checks
// (sequence, payload) can see.
void ResealRecord(const std::string& path, const RecordAt& record, size_t field_offset, uint64_t value,
                  size_t width) {
  std::string bytes = ReadFileBytes(path);
  PutLittleEndian(&bytes, record.offset + field_offset, value, width);
  PutLittleEndian(&bytes, record.offset, Crc32c(bytes.data() + record.offset + 4, record.bytes - 4), 4);
  WriteFileBytes(path, bytes);
}

std::vector<RecordAt> Records(const std::string& path) {
  const std::string bytes = ReadFileBytes(path);
  std::vector<RecordAt> records;
  uint64_t offset = kHeader;
  while (offset + kRecordHeader <= bytes.size()) {
    uint32_t length;
    uint64_t seq;
    std::memcpy(&length, bytes.data() + offset + 4, 4);
    std::memcpy(&seq, bytes.data() + offset + 8, 8);
    records.push_back({offset, kRecordHeader + length, seq});
    offset += kRecordHeader + length;
  }
  EXPECT_EQ(offset, bytes.size()) << path << " does not end on a record boundary";
  return records;
}

// Name -> "<size> bytes crc <crc>" of every file in `dir`: compares whole folders.
std::map<std::string, std::string> DirContents(const std::string& dir) {
  std::map<std::string, std::string> contents;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string bytes = ReadFileBytes(entry.path().string());
    contents[entry.path().filename().string()] = StrCat(bytes.size(), " bytes crc ", Crc32c(bytes));
  }
  return contents;
}

std::string BaseName(const std::string& path) { return std::filesystem::path(path).filename().string(); }

std::vector<std::string> Paths(const std::vector<logfmt::SegmentFile>& segments) {
  std::vector<std::string> paths;
  for (const logfmt::SegmentFile& segment : segments) paths.push_back(segment.path);
  return paths;
}

// ---------------------------------------------------------------------------------
// Fixtures.

// Logs of samples written once per run and copied into the tests' folders: writing
// costs fdatasyncs, copying does not. Removed when the run ends.
class PristineLogs : public ::testing::Environment {
 public:
  // A folder holding the samples first..last, written by one LogWriter (policy
  // "no", 8 KiB segments, a commit every 7 events) that is closed again.
  static const std::string& Get(uint64_t first, uint64_t last) {
    std::string& dir = Dirs()[{first, last}];
    if (!dir.empty()) return dir;
    char pattern[] = "/tmp/log_test_pristine.XXXXXX";
    const char* made = mkdtemp(pattern);
    EXPECT_NE(made, nullptr) << "mkdtemp: " << std::strerror(errno);
    if (made == nullptr) return dir;
    dir = made;
    LogWriterOptions options;
    options.dir = dir;
    options.fsync = FsyncPolicy::kNever;
    options.segment_bytes = kSegmentBytes;
    absl::StatusOr<std::unique_ptr<LogWriter>> writer = LogWriter::Create(options, first);
    EXPECT_TRUE(writer.ok()) << writer.status();
    if (writer.ok()) CommitSamplesThrough(**writer, last);
    return dir;
  }
  void TearDown() override {
    for (const auto& [range, dir] : Dirs()) {
      std::error_code error;
      std::filesystem::remove_all(dir, error);
    }
    Dirs().clear();
  }

 private:
  static std::map<std::pair<uint64_t, uint64_t>, std::string>& Dirs() {
    static auto* dirs = new std::map<std::pair<uint64_t, uint64_t>, std::string>;
    return *dirs;
  }
};
::testing::Environment* const pristine_logs = ::testing::AddGlobalTestEnvironment(new PristineLogs);

class LogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/log_test.XXXXXX";
    const char* made = mkdtemp(pattern);
    ASSERT_NE(made, nullptr) << "mkdtemp: " << std::strerror(errno);
    dir_ = made;
  }
  void TearDown() override {
    if (dir_.empty()) return;
    std::error_code error;
    std::filesystem::remove_all(dir_, error);  // does not follow symbolic links
    EXPECT_FALSE(error) << "cannot remove " << dir_ << ": " << error.message();
  }

  std::unique_ptr<LogWriter> NewWriter(uint64_t next_seq, FsyncPolicy policy = FsyncPolicy::kAlways) {
    LogWriterOptions options;
    options.dir = dir_;
    options.fsync = policy;
    options.segment_bytes = kSegmentBytes;
    absl::StatusOr<std::unique_ptr<LogWriter>> writer = LogWriter::Create(options, next_seq);
    EXPECT_TRUE(writer.ok()) << writer.status();
    return writer.ok() ? std::move(*writer) : nullptr;
  }

  std::vector<logfmt::SegmentFile> Segments() const {
    absl::StatusOr<std::vector<logfmt::SegmentFile>> segments = logfmt::ListSegments(dir_);
    EXPECT_TRUE(segments.ok()) << segments.status();
    return segments.ok() ? *segments : std::vector<logfmt::SegmentFile>{};
  }

  // Puts a log of the samples first..last, as a closed writer leaves it, in the
  // folder; returns its segments.
  std::vector<logfmt::SegmentFile> WriteLog(uint64_t first, uint64_t last) {
    for (const auto& entry : std::filesystem::directory_iterator(PristineLogs::Get(first, last))) {
      std::filesystem::copy_file(entry.path(), std::filesystem::path(dir_) / entry.path().filename());
    }
    return Segments();
  }

  std::string dir_;
};

// A log of samples 1..kThreeSegmentsLast in three segments, and ways to look at it.
constexpr uint64_t kThreeSegmentsLast = 330;

class ThreeSegmentLogTest : public LogTest {
 protected:
  void SetUp() override {
    LogTest::SetUp();
    segments_ = WriteLog(1, kThreeSegmentsLast);
    ASSERT_EQ(segments_.size(), 3u) << "the samples no longer fill exactly three 8 KiB segments";
  }
  const std::string& Path(size_t index) const { return segments_[index].path; }
  uint64_t FirstSeq(size_t index) const { return segments_[index].first_seq; }
  RecordAt MiddleRecord(size_t index) const {
    const std::vector<RecordAt> records = Records(Path(index));
    return records[records.size() / 2];
  }
  RecordAt LastRecord(size_t index) const { return Records(Path(index)).back(); }

  std::vector<logfmt::SegmentFile> segments_;
};

// ---------------------------------------------------------------------------------
// Format: names, folder listing, file header, record bytes.

TEST_F(LogTest, SegmentFileNameRoundTrips) {
  const struct {
    uint64_t first_seq;
    const char* name;
  } cases[] = {
      {0, "log-00000000000000000000.wlog"},
      {1, "log-00000000000000000001.wlog"},
      {42, "log-00000000000000000042.wlog"},
      {std::numeric_limits<uint64_t>::max(), "log-18446744073709551615.wlog"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    EXPECT_EQ(logfmt::SegmentFileName(c.first_seq), c.name);
    uint64_t parsed = 12345;
    ASSERT_TRUE(logfmt::ParseSegmentFileName(c.name, &parsed));
    EXPECT_EQ(parsed, c.first_seq);
  }
}

TEST_F(LogTest, ParseSegmentFileNameRejectsOtherNames) {
  for (const char* name : {
           "", "log-1.wlog", "log-0000000000000000001.wlog", "log-000000000000000000001.wlog",
           "log-18446744073709551616.wlog", "log-0000000000000000000a.wlog", "log-+0000000000000000001.wlog",
           "log- 0000000000000000001.wlog", "LOG-00000000000000000001.wlog", "log-00000000000000000001.WLOG",
           "log-00000000000000000001.wlog.damaged", "log_00000000000000000001.wlog",
           "log-00000000000000000001xwlog", "snapshot-00000000000000000001"}) {
    SCOPED_TRACE(name);
    uint64_t parsed = 12345;
    EXPECT_FALSE(logfmt::ParseSegmentFileName(name, &parsed));
  }
}

TEST_F(LogTest, ListSegmentsIgnoresOtherFilesAndSortsBySeq) {
  for (uint64_t seq : {uint64_t{100}, uint64_t{2}, std::numeric_limits<uint64_t>::max(), uint64_t{10}}) {
    WriteFileBytes(StrCat(dir_, "/", logfmt::SegmentFileName(seq)), "");
  }
  for (const char* other : {"log-10.wlog", "log-00000000000000000005.wlog.damaged", "notes.txt",
                            "log-0000000000000000000a.wlog", "LOG-00000000000000000003.wlog",
                            "log-00000000000000000003.wlog~", "log-18446744073709551616.wlog"}) {
    WriteFileBytes(StrCat(dir_, "/", other), "x");
  }
  const std::vector<logfmt::SegmentFile> segments = Segments();
  ASSERT_EQ(segments.size(), 4u);
  const uint64_t want[] = {2, 10, 100, std::numeric_limits<uint64_t>::max()};
  for (size_t i = 0; i < segments.size(); ++i) {
    EXPECT_EQ(segments[i].first_seq, want[i]);
    EXPECT_EQ(segments[i].path, StrCat(dir_, "/", logfmt::SegmentFileName(want[i])));
  }
}

TEST_F(LogTest, ListSegmentsOfAMissingFolderIsUnavailable) {
  const std::string missing = StrCat(dir_, "/missing");
  absl::StatusOr<std::vector<logfmt::SegmentFile>> segments = logfmt::ListSegments(missing);
  ASSERT_FALSE(segments.ok());
  EXPECT_EQ(segments.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(segments.status().message(), StrCat("cannot list ", missing, ": No such file or directory"));

  Read read = ReadDir(missing);
  ASSERT_FALSE(read.result.ok());
  EXPECT_EQ(read.result.status().code(), absl::StatusCode::kUnavailable);
}

TEST_F(LogTest, FileHeaderRoundTripsAndRejectsDamage) {
  const uint64_t first_seq = 0x0102030405060708;
  const std::string header = logfmt::EncodeFileHeader(first_seq);
  ASSERT_EQ(header.size(), 24u);
  EXPECT_EQ(header.substr(0, 8), "WALLETLG");
  EXPECT_EQ(header.substr(8, 4), std::string("\x01\0\0\0", 4));
  EXPECT_EQ(header.substr(16, 8), "\x08\x07\x06\x05\x04\x03\x02\x01");
  uint32_t crc;
  std::memcpy(&crc, header.data() + 12, 4);
  EXPECT_EQ(crc, Crc32cExtend(Crc32c(header.data(), 12), header.data() + 16, 8));

  uint64_t decoded = 0;
  std::string error;
  ASSERT_TRUE(logfmt::DecodeFileHeader(header + "records follow", &decoded, &error)) << error;
  EXPECT_EQ(decoded, first_seq);

  std::string bad_magic = header;
  bad_magic[0] = 'X';
  std::string bad_seq = header;
  bad_seq[20] ^= 1;
  std::string bad_crc = header;
  bad_crc[13] ^= 1;
  std::string version_2 = header;
  PutLittleEndian(&version_2, 8, 2, 4);
  PutLittleEndian(&version_2, 12, Crc32cExtend(Crc32c(version_2.data(), 12), version_2.data() + 16, 8), 4);
  const struct {
    const char* name;
    std::string bytes;
    const char* error;
  } cases[] = {
      {"short", header.substr(0, 23), "file header needs 24 bytes, file has 23"},
      {"empty", "", "file header needs 24 bytes, file has 0"},
      {"magic", bad_magic, "not an event log segment (bad magic)"},
      {"first_seq", bad_seq, "file header checksum mismatch"},
      {"crc", bad_crc, "file header checksum mismatch"},
      {"version", version_2, "format version 2 is not supported (this build reads 1)"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    error.clear();
    EXPECT_FALSE(logfmt::DecodeFileHeader(c.bytes, &decoded, &error));
    EXPECT_EQ(error, c.error);
  }
}

TEST_F(LogTest, RecordBytesFollowTheGrammar) {
  std::unique_ptr<LogWriter> writer = NewWriter(7);
  ASSERT_NE(writer, nullptr);
  AppendSamples(*writer, 1);  // seq 7: a transfer
  ASSERT_TRUE(writer->Commit(kStartMs).ok());
  std::string txid, text;
  const Event event = SampleEvent(7, &txid, &text);
  ASSERT_EQ(event.type, EventType::kTransfer);
  std::string payload;
  EncodeEventPayload(event, &payload);

  const std::string bytes = ReadFileBytes(writer->segment_path());
  EXPECT_EQ(writer->segment_path(), StrCat(dir_, "/log-00000000000000000007.wlog"));
  ASSERT_EQ(bytes.size(), kHeader + kRecordHeader + payload.size());
  EXPECT_EQ(bytes.substr(0, kHeader), logfmt::EncodeFileHeader(7));
  std::string record(kRecordHeader, '\0');
  PutLittleEndian(&record, 4, payload.size(), 4);
  PutLittleEndian(&record, 8, 7, 8);
  record[16] = static_cast<char>(EventType::kTransfer);
  record += payload;
  PutLittleEndian(&record, 0, Crc32c(record.data() + 4, record.size() - 4), 4);
  EXPECT_EQ(bytes.substr(kHeader), record);
}

// ---------------------------------------------------------------------------------
// Writer and reader.

TEST_F(LogTest, WriterAndReaderRoundTripAcrossSegments) {
  std::unique_ptr<LogWriter> writer = NewWriter(1001);
  ASSERT_NE(writer, nullptr);
  CommitSamplesThrough(*writer, 1700);
  EXPECT_EQ(writer->last_seq(), 1700u);
  EXPECT_EQ(writer->stats().records, 700u);
  EXPECT_EQ(writer->stats().commits, 100u);

  const std::vector<logfmt::SegmentFile> segments = Segments();
  ASSERT_GE(segments.size(), 5u);
  EXPECT_EQ(writer->stats().segments_created, segments.size());
  EXPECT_EQ(writer->segment_path(), segments.back().path);
  uint64_t next = 1001;
  uint64_t total_bytes = 0;
  for (size_t i = 0; i < segments.size(); ++i) {
    SCOPED_TRACE(segments[i].path);
    const std::vector<RecordAt> records = Records(segments[i].path);
    ASSERT_FALSE(records.empty());
    EXPECT_EQ(segments[i].first_seq, next);
    for (const RecordAt& record : records) EXPECT_EQ(record.seq, next++);
    const uint64_t size = FileSize(segments[i].path);
    total_bytes += size;
    if (i + 1 < segments.size()) {  // closed: rolled at the first commit that filled it
      EXPECT_GE(size, kSegmentBytes);
      EXPECT_LT(size, kSegmentBytes + 7 * (kRecordHeader + kMaxEventPayloadBytes));
    }
  }
  EXPECT_EQ(next, 1701u);

  LogReadOptions options;
  options.from_seq = 1001;
  const Read read = ReadDir(dir_, options);
  ASSERT_TRUE(CleanRead(read, 1001, 1700));
  EXPECT_EQ(read.result->first_seq_delivered, 1001u);
  EXPECT_EQ(read.result->events_delivered, 700u);
  EXPECT_EQ(read.result->segments_read, segments.size());
  EXPECT_EQ(read.result->bytes_read, total_bytes);
  EXPECT_FALSE(read.result->stopped_by_visitor);
}

TEST_F(LogTest, ReadFromTheMiddleOfTheThirdSegment) {
  const std::vector<logfmt::SegmentFile> segments = WriteLog(1001, 1700);
  ASSERT_GE(segments.size(), 4u);
  const uint64_t from = (segments[2].first_seq + segments[3].first_seq) / 2;
  ASSERT_GT(from, segments[2].first_seq);
  LogReadOptions options;
  options.from_seq = from;
  const Read read = ReadDir(dir_, options);
  ASSERT_TRUE(CleanRead(read, from, 1700));
  EXPECT_EQ(read.result->first_seq_delivered, from);
  EXPECT_EQ(read.result->events_delivered, 1700 - from + 1);
  EXPECT_EQ(read.result->segments_read, segments.size() - 2);
}

TEST_F(LogTest, ToSeqStopsReading) {
  const std::vector<logfmt::SegmentFile> segments = WriteLog(1001, 1700);
  ASSERT_GE(segments.size(), 3u);
  const struct {
    uint64_t from, to;
  } cases[] = {
      {1001, segments[1].first_seq + 5},
      {1001, segments[1].first_seq - 1},  // the last record of the first segment
      {segments[2].first_seq + 1, segments[2].first_seq + 1},
      {1001, 1001},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(StrCat(c.from, "..", c.to));
    LogReadOptions options;
    options.from_seq = c.from;
    options.to_seq = c.to;
    const Read read = ReadDir(dir_, options);
    ASSERT_TRUE(CleanRead(read, c.from, c.to));
    EXPECT_EQ(read.result->events_delivered, c.to - c.from + 1);
    EXPECT_FALSE(read.result->stopped_by_visitor);
  }
}

TEST_F(LogTest, VisitorReturningFalseStopsReading) {
  ASSERT_GE(WriteLog(1001, 1700).size(), 2u);
  LogReadOptions options;
  options.from_seq = 1001;
  const Read read = ReadDir(dir_, options, /*stop_at=*/1050);
  ASSERT_TRUE(CleanRead(read, 1001, 1050));
  EXPECT_TRUE(read.result->stopped_by_visitor);
  EXPECT_EQ(read.result->events_delivered, 50u);
  EXPECT_EQ(read.result->segments_read, 1u);
}

TEST_F(LogTest, ReadingBeforeTheFirstSegmentIsNotFound) {
  ASSERT_EQ(WriteLog(1001, 1010).size(), 1u);
  for (uint64_t from : {uint64_t{1}, uint64_t{1000}}) {
    LogReadOptions options;
    options.from_seq = from;
    const Read read = ReadDir(dir_, options);
    ASSERT_FALSE(read.result.ok());
    EXPECT_EQ(read.result.status().code(), absl::StatusCode::kNotFound);
    EXPECT_EQ(read.result.status().message(),
              StrCat("event log in ", dir_, " starts at seq 1001, but seq ", from, " is needed"));
    EXPECT_TRUE(read.seqs.empty());
  }
  LogReadOptions options;
  options.from_seq = 1011;  // just after the last record: nothing to deliver, no error
  const Read read = ReadDir(dir_, options);
  ASSERT_TRUE(CleanRead(read, 1011, 1010));
  EXPECT_EQ(read.result->first_seq_delivered, 0u);
}

TEST_F(LogTest, EmptyFolderReadsNothing) {
  const Read read = ReadDir(dir_);
  ASSERT_TRUE(CleanRead(read, 1, 0));
  EXPECT_EQ(read.result->segments_read, 0u);
}

TEST_F(LogTest, CreateRejectsBadArguments) {
  LogWriterOptions options;
  options.dir = dir_;
  options.segment_bytes = kSegmentBytes;
  absl::StatusOr<std::unique_ptr<LogWriter>> writer = LogWriter::Create(options, 0);
  ASSERT_FALSE(writer.ok());
  EXPECT_EQ(writer.status(), absl::InvalidArgumentError("sequence numbers start at 1"));
  options.segment_bytes = 4119;
  writer = LogWriter::Create(options, 1);
  ASSERT_FALSE(writer.ok());
  EXPECT_EQ(writer.status(), absl::InvalidArgumentError("segment_bytes is too small (at least 4120)"));
  options.segment_bytes = 4120;
  EXPECT_TRUE(LogWriter::Create(options, 1).ok());
}

TEST_F(LogTest, CreateRefusesASegmentThatHoldsRecords) {
  ASSERT_EQ(WriteLog(1, 20).size(), 1u);
  const auto before = DirContents(dir_);
  LogWriterOptions options;
  options.dir = dir_;
  absl::StatusOr<std::unique_ptr<LogWriter>> writer = LogWriter::Create(options, 1);
  ASSERT_FALSE(writer.ok());
  EXPECT_EQ(writer.status(), absl::AlreadyExistsError(StrCat("segment ", dir_,
                                                             "/log-00000000000000000001.wlog already holds records")));
  EXPECT_EQ(DirContents(dir_), before);
}

TEST_F(LogTest, HeaderOnlyNewestSegmentIsReplacedByTheNextWriter) {
  ASSERT_EQ(WriteLog(1, 20).size(), 1u);
  {  // A crash right after a roll: the new segment holds only its header.
    std::unique_ptr<LogWriter> idle = NewWriter(21);
    ASSERT_NE(idle, nullptr);
  }
  const std::string header_only = StrCat(dir_, "/", logfmt::SegmentFileName(21));
  ASSERT_EQ(FileSize(header_only), kHeader);
  Read read = ReadDir(dir_);
  ASSERT_TRUE(CleanRead(read, 1, 20));
  EXPECT_EQ(read.result->segments_read, 2u);

  std::unique_ptr<LogWriter> writer = NewWriter(21);
  ASSERT_NE(writer, nullptr);
  EXPECT_EQ(writer->segment_path(), header_only);
  CommitSamplesThrough(*writer, 30);
  EXPECT_EQ(Segments().size(), 2u);
  EXPECT_TRUE(CleanRead(ReadDir(dir_), 1, 30));
}

// ---------------------------------------------------------------------------------
// Fsync policies.

class LogPolicyTest : public LogTest, public ::testing::WithParamInterface<FsyncPolicy> {};

INSTANTIATE_TEST_SUITE_P(Policies, LogPolicyTest,
                         ::testing::Values(FsyncPolicy::kAlways, FsyncPolicy::kEverySecond, FsyncPolicy::kNever),
                         [](const ::testing::TestParamInfo<FsyncPolicy>& param) {
                           return std::string(FsyncPolicyName(param.param));
                         });

TEST_P(LogPolicyTest, CommitIsVisibleToANewReaderAndDurableSeqFollowsThePolicy) {
  const FsyncPolicy policy = GetParam();
  std::unique_ptr<LogWriter> writer = NewWriter(1, policy);
  ASSERT_NE(writer, nullptr);
  EXPECT_EQ(writer->policy(), policy);
  EXPECT_EQ(writer->durable_seq(), 0u);
  AppendSamples(*writer, 5);
  EXPECT_EQ(writer->last_seq(), 5u);
  EXPECT_TRUE(CleanRead(ReadDir(dir_), 1, 0)) << "appended but not committed records are not in the file";
  ASSERT_TRUE(writer->Commit(kStartMs).ok());
  EXPECT_TRUE(CleanRead(ReadDir(dir_), 1, 5));
  EXPECT_EQ(writer->durable_seq(), policy == FsyncPolicy::kAlways ? 5u : 0u);
  EXPECT_EQ(writer->pending_bytes() == 0, policy != FsyncPolicy::kEverySecond);

  // A due SyncIfDue syncs only under everysec.
  ASSERT_TRUE(writer->SyncIfDue(kStartMs + 10'000).ok());
  EXPECT_EQ(writer->durable_seq(), policy == FsyncPolicy::kNever ? 0u : 5u);
  EXPECT_EQ(writer->pending_bytes(), 0u);

  AppendSamples(*writer, 3);
  ASSERT_TRUE(writer->Commit(kStartMs + 10'001).ok());
  EXPECT_TRUE(CleanRead(ReadDir(dir_), 1, 8));
  EXPECT_EQ(writer->durable_seq(), policy == FsyncPolicy::kAlways ? 8u : policy == FsyncPolicy::kEverySecond ? 5u : 0u);

  ASSERT_TRUE(writer->Sync().ok());
  EXPECT_EQ(writer->durable_seq(), 8u);
  EXPECT_EQ(writer->stats().commits, 2u);
  EXPECT_EQ(writer->stats().records, 8u);
  EXPECT_EQ(writer->stats().fsyncs, policy == FsyncPolicy::kAlways ? 3u : policy == FsyncPolicy::kEverySecond ? 2u : 1u);
  EXPECT_EQ(writer->stats().failures, 0u);

  ASSERT_TRUE(writer->Commit(kStartMs + 10'002).ok()) << "nothing pending";
  EXPECT_EQ(writer->stats().commits, 2u);
}

TEST_F(LogTest, EverySecondSyncsAtMostOnceASecond) {
  std::unique_ptr<LogWriter> writer = NewWriter(1, FsyncPolicy::kEverySecond);
  ASSERT_NE(writer, nullptr);
  const int64_t t = kStartMs;
  AppendSamples(*writer, 3);
  ASSERT_TRUE(writer->Commit(t).ok());
  EXPECT_EQ(writer->durable_seq(), 0u);
  // Whether the first SyncIfDue syncs depends on when the writer was created; a
  // second later it must have.
  ASSERT_TRUE(writer->SyncIfDue(t).ok());
  AppendSamples(*writer, 3);
  ASSERT_TRUE(writer->Commit(t + 1000).ok());
  ASSERT_TRUE(writer->SyncIfDue(t + 1000).ok());
  EXPECT_EQ(writer->durable_seq(), 6u) << "a second after the previous sync, SyncIfDue syncs";
  const uint64_t fsyncs = writer->stats().fsyncs;

  // Synced at t+1000: the next sync is due at t+2000, not before.
  AppendSamples(*writer, 3);
  ASSERT_TRUE(writer->Commit(t + 1500).ok());
  EXPECT_EQ(writer->durable_seq(), 6u);
  for (int64_t now : {t + 1500, t + 1999}) {
    ASSERT_TRUE(writer->SyncIfDue(now).ok());
    EXPECT_EQ(writer->durable_seq(), 6u) << "SyncIfDue(t+" << now - t << ") synced only "
                                          << now - t - 1000 << " ms after the previous sync";
  }
  EXPECT_EQ(writer->stats().fsyncs, fsyncs);
  ASSERT_TRUE(writer->SyncIfDue(t + 2000).ok());
  EXPECT_EQ(writer->durable_seq(), 9u);
  EXPECT_EQ(writer->stats().fsyncs, fsyncs + 1);

  // Nothing unsynced: no sync, however late.
  ASSERT_TRUE(writer->SyncIfDue(t + 60'000).ok());
  EXPECT_EQ(writer->stats().fsyncs, fsyncs + 1);

  // Sync() makes everything durable at once.
  AppendSamples(*writer, 2);
  ASSERT_TRUE(writer->Commit(t + 60'001).ok());
  EXPECT_EQ(writer->durable_seq(), 9u);
  ASSERT_TRUE(writer->Sync().ok());
  EXPECT_EQ(writer->durable_seq(), 11u);
  EXPECT_TRUE(CleanRead(ReadDir(dir_), 1, 11));
}

TEST(FsyncPolicyTest, NamesRoundTrip) {
  for (FsyncPolicy policy : {FsyncPolicy::kAlways, FsyncPolicy::kEverySecond, FsyncPolicy::kNever}) {
    FsyncPolicy parsed = policy == FsyncPolicy::kAlways ? FsyncPolicy::kNever : FsyncPolicy::kAlways;
    ASSERT_TRUE(ParseFsyncPolicy(FsyncPolicyName(policy), &parsed)) << FsyncPolicyName(policy);
    EXPECT_EQ(parsed, policy);
  }
  EXPECT_EQ(FsyncPolicyName(FsyncPolicy::kAlways), "always");
  EXPECT_EQ(FsyncPolicyName(FsyncPolicy::kEverySecond), "everysec");
  EXPECT_EQ(FsyncPolicyName(FsyncPolicy::kNever), "no");
  FsyncPolicy parsed;
  EXPECT_FALSE(ParseFsyncPolicy("sometimes", &parsed));
  EXPECT_FALSE(ParseFsyncPolicy("", &parsed));
}

// ---------------------------------------------------------------------------------
// Failure and retry.

std::string NoSpace(std::string_view what, const std::string& path) {
  return StrCat(what, " ", path, ": ", std::strerror(ENOSPC));
}

// The file ends exactly after the record of `last_seq` and holds nothing else.
AssertionResult EndsAfter(const std::string& path, uint64_t last_seq) {
  const std::vector<RecordAt> records = Records(path);
  if (records.empty()) return AssertionFailure() << path << " holds no record";
  const RecordAt& last = records.back();
  if (last.seq != last_seq) return AssertionFailure() << "last record " << last.seq << ", expected " << last_seq;
  if (FileSize(path) != last.offset + last.bytes) return AssertionFailure() << "bytes after the last record";
  return AssertionSuccess();
}

TEST_P(LogPolicyTest, InjectedErrorFailsCommitAndRetryWritesEachRecordOnce) {
  const FsyncPolicy policy = GetParam();
  std::unique_ptr<LogWriter> writer = NewWriter(1, policy);
  ASSERT_NE(writer, nullptr);
  const std::string& path = writer->segment_path();
  AppendSamples(*writer, 5);
  ASSERT_TRUE(writer->Commit(kStartMs).ok());
  const uint64_t durable_before = writer->durable_seq();

  AppendSamples(*writer, 4);  // 6..9
  writer->set_injected_error(ENOSPC);
  EXPECT_EQ(writer->injected_error(), ENOSPC);
  const absl::Status failed = writer->Commit(kStartMs + 1);
  EXPECT_EQ(failed, absl::UnavailableError(NoSpace("write", path)));
  EXPECT_TRUE(writer->failed());
  EXPECT_EQ(writer->failure(), failed);
  EXPECT_EQ(writer->stats().failures, 1u);
  EXPECT_EQ(writer->durable_seq(), durable_before);
  EXPECT_EQ(writer->last_seq(), 9u);
  EXPECT_EQ(writer->Commit(kStartMs + 2), failed) << "a failed writer refuses to commit";
  EXPECT_EQ(writer->Sync(), failed);

  // Nothing of 6..9 reached the file: no valid record, no torn tail.
  EXPECT_TRUE(CleanRead(ReadDir(dir_), 1, 5));
  EXPECT_TRUE(EndsAfter(path, 5));

  EXPECT_EQ(writer->Retry(), absl::UnavailableError(NoSpace("write", path)));
  EXPECT_TRUE(writer->failed());
  EXPECT_TRUE(CleanRead(ReadDir(dir_), 1, 5));

  writer->set_injected_error(0);
  const absl::Status retried = writer->Retry();
  ASSERT_TRUE(retried.ok()) << retried;
  EXPECT_FALSE(writer->failed());
  EXPECT_TRUE(writer->failure().ok());
  EXPECT_EQ(writer->durable_seq(), 9u);
  EXPECT_EQ(writer->pending_bytes(), 0u);
  EXPECT_TRUE(CleanRead(ReadDir(dir_), 1, 9));
  EXPECT_TRUE(EndsAfter(path, 9));
  EXPECT_TRUE(writer->Retry().ok()) << "Retry of a healthy writer is a no-op";

  AppendSamples(*writer, 2);
  ASSERT_TRUE(writer->Commit(kStartMs + 3).ok());
  EXPECT_TRUE(CleanRead(ReadDir(dir_), 1, 11));
  EXPECT_TRUE(EndsAfter(path, 11));
}

TEST_P(LogPolicyTest, RetryCutsGarbageWrittenWhileFailed) {
  std::unique_ptr<LogWriter> writer = NewWriter(1, GetParam());
  ASSERT_NE(writer, nullptr);
  const std::string& path = writer->segment_path();
  AppendSamples(*writer, 5);
  ASSERT_TRUE(writer->Commit(kStartMs).ok());
  AppendSamples(*writer, 3);  // 6..8
  writer->set_injected_error(ENOSPC);
  ASSERT_FALSE(writer->Commit(kStartMs + 1).ok());
  writer->set_injected_error(0);
  // What a short write could have left behind: part of a record, then junk.
  WriteFileBytes(path, std::string(1000, '\x5a'), /*append=*/true);
  EXPECT_FALSE(ReadDir(dir_).result.ok()) << "the junk reads as damage before Retry";

  const absl::Status retried = writer->Retry();
  ASSERT_TRUE(retried.ok()) << retried;
  EXPECT_TRUE(EndsAfter(path, 8));
  EXPECT_TRUE(CleanRead(ReadDir(dir_), 1, 8));
}

TEST_F(LogTest, EverySecondSyncFailureKeepsUnsyncedRecordsForRetry) {
  std::unique_ptr<LogWriter> writer = NewWriter(1, FsyncPolicy::kEverySecond);
  ASSERT_NE(writer, nullptr);
  const std::string& path = writer->segment_path();
  AppendSamples(*writer, 5);
  ASSERT_TRUE(writer->Commit(kStartMs).ok());
  ASSERT_TRUE(writer->Sync().ok());
  EXPECT_EQ(writer->durable_seq(), 5u);
  AppendSamples(*writer, 5);
  ASSERT_TRUE(writer->Commit(kStartMs + 100).ok());
  AppendSamples(*writer, 5);
  ASSERT_TRUE(writer->Commit(kStartMs + 200).ok());
  EXPECT_EQ(writer->durable_seq(), 5u);
  EXPECT_GT(writer->pending_bytes(), 0u) << "6..15 are kept until synced";

  writer->set_injected_error(ENOSPC);
  const absl::Status failed = writer->SyncIfDue(kStartMs + 5000);
  EXPECT_EQ(failed, absl::UnavailableError(NoSpace("fdatasync", path)));
  EXPECT_TRUE(writer->failed());
  EXPECT_EQ(writer->durable_seq(), 5u);
  EXPECT_EQ(writer->SyncIfDue(kStartMs + 6000), failed);
  // The written but unsynced records are in the file (the page cache), once.
  EXPECT_TRUE(CleanRead(ReadDir(dir_), 1, 15));

  EXPECT_EQ(writer->Retry(), absl::UnavailableError(NoSpace("write", path)));
  EXPECT_TRUE(writer->failed());
  writer->set_injected_error(0);
  const absl::Status retried = writer->Retry();
  ASSERT_TRUE(retried.ok()) << retried;
  EXPECT_FALSE(writer->failed());
  EXPECT_EQ(writer->durable_seq(), 15u);
  EXPECT_EQ(writer->pending_bytes(), 0u);
  EXPECT_TRUE(CleanRead(ReadDir(dir_), 1, 15));
  EXPECT_TRUE(EndsAfter(path, 15));

  AppendSamples(*writer, 1);
  ASSERT_TRUE(writer->Commit(kStartMs + 7000).ok());
  EXPECT_TRUE(CleanRead(ReadDir(dir_), 1, 16));
  EXPECT_TRUE(EndsAfter(path, 16));
}

// ---------------------------------------------------------------------------------
// Removing segments covered by a snapshot.

TEST_F(LogTest, RemoveSegmentsThroughRemovesExactlyTheCoveredClosedSegments) {
  std::unique_ptr<LogWriter> writer = NewWriter(1, FsyncPolicy::kNever);
  ASSERT_NE(writer, nullptr);
  CommitSamplesThrough(*writer, 700);
  const std::vector<logfmt::SegmentFile> all = Segments();
  const size_t n = all.size();
  ASSERT_GE(n, 5u);
  ASSERT_EQ(writer->segment_path(), all.back().path);

  // Cumulative: each step removes from what the previous ones left.
  const struct {
    uint64_t seq;
    int removed;
    size_t first_kept;  // index into `all`
  } steps[] = {
      {0, 0, 0},
      {all[1].first_seq - 2, 0, 0},  // the first segment's last record is not covered
      {all[1].first_seq - 1, 1, 1},  // exactly covered
      {all[2].first_seq + 3, 1, 2},  // the middle of the third segment
      {all[n - 1].first_seq - 1, static_cast<int>(n - 3), n - 1},
      {700, 0, n - 1},  // the current segment stays, even when wholly covered
      {100'000, 0, n - 1},
  };
  int removed_total = 0;
  for (const auto& step : steps) {
    SCOPED_TRACE(StrCat("through ", step.seq));
    absl::StatusOr<int> removed = writer->RemoveSegmentsThrough(step.seq);
    ASSERT_TRUE(removed.ok()) << removed.status();
    EXPECT_EQ(*removed, step.removed);
    removed_total += step.removed;
    EXPECT_EQ(writer->stats().segments_removed, static_cast<uint64_t>(removed_total));
    const std::vector<logfmt::SegmentFile> kept(all.begin() + static_cast<std::ptrdiff_t>(step.first_kept), all.end());
    EXPECT_EQ(Paths(Segments()), Paths(kept));

    LogReadOptions options;
    options.from_seq = step.seq + 1;
    const Read read = ReadDir(dir_, options);
    ASSERT_TRUE(CleanRead(read, step.seq + 1, 700));
    if (step.first_kept > 0) {
      options.from_seq = kept.front().first_seq - 1;
      EXPECT_EQ(ReadDir(dir_, options).result.status().code(), absl::StatusCode::kNotFound);
    }
  }
  // The writer goes on in its current segment.
  CommitSamplesThrough(*writer, 720);
  LogReadOptions options;
  options.from_seq = all[n - 1].first_seq;
  EXPECT_TRUE(CleanRead(ReadDir(dir_, options), all[n - 1].first_seq, 720));
}

TEST_F(LogTest, RemoveSegmentsThroughTheLargestSeqRemovesEveryClosedSegment) {
  std::unique_ptr<LogWriter> writer = NewWriter(1, FsyncPolicy::kNever);
  ASSERT_NE(writer, nullptr);
  CommitSamplesThrough(*writer, 400);
  const std::vector<logfmt::SegmentFile> all = Segments();
  ASSERT_GE(all.size(), 3u);
  absl::StatusOr<int> removed = writer->RemoveSegmentsThrough(std::numeric_limits<uint64_t>::max());
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(*removed, static_cast<int>(all.size() - 1));
  EXPECT_EQ(Paths(Segments()), std::vector<std::string>{writer->segment_path()});
}

// ---------------------------------------------------------------------------------
// Torn tails and damage, read in each combination of RepairMode and DamagePolicy.

struct ReadMode {
  RepairMode repair;
  DamagePolicy damage;
  const char* name;
};
void PrintTo(const ReadMode& mode, std::ostream* os) { *os << mode.name; }

class LogCorruptionTest : public ThreeSegmentLogTest, public ::testing::WithParamInterface<ReadMode> {
 protected:
  LogReadOptions Options() const {
    LogReadOptions options;
    options.repair = GetParam().repair;
    options.damage = GetParam().damage;
    return options;
  }
  bool Repair() const { return GetParam().repair == RepairMode::kRepair; }

  // The folder as a kRepair read that cuts `path` at `offset` (removing it when the
  // cut falls inside its header) leaves it.
  static std::map<std::string, std::string> AfterCut(std::map<std::string, std::string> contents,
                                                     const std::string& path, uint64_t offset) {
    const std::string name = BaseName(path);
    if (offset < kHeader) {
      contents.erase(name);
    } else {
      const std::string bytes = ReadFileBytes(path).substr(0, offset);
      contents[name] = StrCat(bytes.size(), " bytes crc ", Crc32c(bytes));
    }
    return contents;
  }

  // Expects a read in this test's mode to find damage at `offset` of `path` for
  // `reason`, after the valid records 1..last_good, with `later` segments after it.
  void ExpectDamage(const std::string& path, uint64_t offset, const std::string& reason, uint64_t last_good,
                    const std::vector<std::string>& later) {
    ExpectProblem(/*damage=*/true, path, offset, reason, last_good, later);
  }
  // Expects a read in this test's mode to find a torn tail at `offset` of `path`
  // after the valid records 1..last_seq.
  void ExpectTornTail(const std::string& path, uint64_t offset, uint64_t last_seq) {
    ExpectProblem(/*damage=*/false, path, offset, "", last_seq, {});
  }

 private:
  void ExpectProblem(bool damage, const std::string& path, uint64_t offset, const std::string& reason,
                     uint64_t last_good, const std::vector<std::string>& later) {
    const auto before = DirContents(dir_);
    const uint64_t bytes_from_offset = FileSize(path) - offset;
    std::map<std::string, std::string> repaired = AfterCut(before, path, offset);
    if (damage && offset < kHeader) {
      // A damaged segment with nothing valid in it is set aside whole, not deleted.
      const std::string name = BaseName(path);
      repaired[name + ".damaged"] = before.at(name);
    }
    for (const std::string& aside : later) {  // renamed, not changed
      const std::string name = BaseName(aside);
      repaired[name + ".damaged"] = repaired.at(name);
      repaired.erase(name);
    }
    const Read read = ReadDir(dir_, Options());
    if (damage && GetParam().damage == DamagePolicy::kRefuse) {
      ASSERT_FALSE(read.result.ok()) << "damage read as " << read.seqs.size() << " events";
      EXPECT_EQ(read.result.status().code(), absl::StatusCode::kDataLoss);
      EXPECT_THAT(std::string(read.result.status().message()),
                  HasSubstr(StrCat("event log damaged in ", path, " at offset ", offset, ": ", reason, "; ",
                                   bytes_from_offset, " bytes of this segment and ", later.size(),
                                   " later segment(s) follow.")));
      EXPECT_EQ(DirContents(dir_), before) << "a refused read changes nothing";
      return;
    }
    ASSERT_TRUE(read.result.ok()) << read.result.status();
    const LogReadResult& result = *read.result;
    struct Found {
      bool found;
      std::string path;
      uint64_t offset, bytes;
    };
    const Found torn{result.torn_tail, result.tail_path, result.tail_offset, result.tail_bytes};
    const Found damaged{result.damaged, result.damage_path, result.damage_offset, result.damaged_bytes};
    const Found& problem = damage ? damaged : torn;
    EXPECT_TRUE(problem.found) << (damage ? "no damage found" : "no torn tail found");
    EXPECT_EQ(problem.path, path);
    EXPECT_EQ(problem.offset, offset);
    EXPECT_EQ(problem.bytes, bytes_from_offset);
    EXPECT_FALSE((damage ? torn : damaged).found) << "damage taken for a torn tail, or the reverse: "
                                                   << result.damage_reason;
    EXPECT_EQ(result.damage_reason, reason);
    EXPECT_EQ(result.segments_set_aside, later.size());
    EXPECT_EQ(result.last_seq, last_good);
    EXPECT_TRUE(DeliveredRun(read, 1, last_good));
    if (!Repair()) {
      EXPECT_EQ(DirContents(dir_), before) << "kReadOnly changes nothing";
      return;
    }
    EXPECT_EQ(DirContents(dir_), repaired);
    EXPECT_TRUE(CleanRead(ReadDir(dir_), 1, last_good)) << "after the repair the log reads clean";
  }
};

INSTANTIATE_TEST_SUITE_P(Modes, LogCorruptionTest,
                         ::testing::Values(ReadMode{RepairMode::kReadOnly, DamagePolicy::kRefuse, "ReadOnlyRefuse"},
                                           ReadMode{RepairMode::kReadOnly, DamagePolicy::kKeepPrefix,
                                                    "ReadOnlyKeepPrefix"},
                                           ReadMode{RepairMode::kRepair, DamagePolicy::kRefuse, "RepairRefuse"},
                                           ReadMode{RepairMode::kRepair, DamagePolicy::kKeepPrefix,
                                                    "RepairKeepPrefix"}),
                         [](const ::testing::TestParamInfo<ReadMode>& param) { return std::string(param.param.name); });

TEST_P(LogCorruptionTest, FlippedByteInMiddleRecordIsDamage) {
  const RecordAt record = MiddleRecord(0);
  FlipByte(Path(0), record.offset + kRecordHeader + 3);
  ExpectDamage(Path(0), record.offset, "record checksum mismatch", record.seq - 1, {Path(1), Path(2)});
}

TEST_P(LogCorruptionTest, FlippedByteInLastRecordIsDamage) {
  // A complete record with a bad checksum at the very end of the newest segment is
  // damage, not a torn tail: a crash cannot produce it.
  const RecordAt record = LastRecord(2);
  ASSERT_EQ(record.seq, kThreeSegmentsLast);
  FlipByte(Path(2), record.offset + record.bytes - 1);
  ExpectDamage(Path(2), record.offset, "record checksum mismatch", record.seq - 1, {});
}

TEST_P(LogCorruptionTest, TruncatedRecordHeaderIsTornTail) {
  const RecordAt record = LastRecord(2);
  TruncateFile(Path(2), record.offset + kRecordHeader - 1);
  ExpectTornTail(Path(2), record.offset, record.seq - 1);
}

TEST_P(LogCorruptionTest, TruncatedPayloadIsTornTail) {
  const RecordAt record = LastRecord(2);
  TruncateFile(Path(2), record.offset + kRecordHeader + 3);
  ExpectTornTail(Path(2), record.offset, record.seq - 1);
}

TEST_P(LogCorruptionTest, ZeroFilledTailIsTornTail) {
  const uint64_t end = FileSize(Path(2));
  WriteFileBytes(Path(2), std::string(4096, '\0'), /*append=*/true);
  ExpectTornTail(Path(2), end, kThreeSegmentsLast);
}

TEST_P(LogCorruptionTest, ZeroFilledNewestSegmentIsTornTail) {
  // Created, but neither header nor data reached the disk.
  const std::string path = StrCat(dir_, "/", logfmt::SegmentFileName(kThreeSegmentsLast + 1));
  WriteFileBytes(path, std::string(4096, '\0'));
  ExpectTornTail(path, 0, kThreeSegmentsLast);
}

TEST_P(LogCorruptionTest, ZeroFilledTailInOlderSegmentIsDamage) {
  const uint64_t end = FileSize(Path(1));
  WriteFileBytes(Path(1), std::string(4096, '\0'), /*append=*/true);
  ExpectDamage(Path(1), end, "record checksum mismatch (zero-filled, but not in the newest segment)",
               FirstSeq(2) - 1, {Path(2)});
}

TEST_P(LogCorruptionTest, BadChecksumInMiddleOfOlderSegmentIsDamage) {
  const RecordAt record = MiddleRecord(1);
  FlipByte(Path(1), record.offset);  // the stored checksum itself
  ExpectDamage(Path(1), record.offset, "record checksum mismatch", record.seq - 1, {Path(2)});
}

TEST_P(LogCorruptionTest, TornTailInOlderSegmentIsDamage) {
  const RecordAt record = LastRecord(1);
  TruncateFile(Path(1), record.offset + kRecordHeader + 2);
  ExpectDamage(Path(1), record.offset,
               StrCat("truncated record: ", record.bytes, " bytes announced, ", kRecordHeader + 2, " in the file"),
               record.seq - 1, {Path(2)});
}

TEST_P(LogCorruptionTest, LengthAboveMaximumIsDamage) {
  // Even in the last record of the newest segment: a torn write leaves a prefix of
  // real bytes, and no real record is that long.
  const RecordAt record = LastRecord(2);
  std::string bytes = ReadFileBytes(Path(2));
  PutLittleEndian(&bytes, record.offset + 4, logfmt::kMaxPayloadBytes + 1, 4);
  WriteFileBytes(Path(2), bytes);
  ExpectDamage(Path(2), record.offset, "record length 4097 above the maximum", record.seq - 1, {});
}

TEST_P(LogCorruptionTest, SequenceGapIsDamage) {
  ASSERT_TRUE(std::filesystem::remove(Path(1)));
  ExpectDamage(Path(2), 0, StrCat("sequence gap: expected seq ", FirstSeq(1), ", segment starts at ", FirstSeq(2)),
               FirstSeq(1) - 1, {});
}

TEST_P(LogCorruptionTest, RecordSequenceJumpIsDamage) {
  // A record with a valid checksum but the wrong sequence number, in the newest
  // segment: damage, not a torn tail.
  const RecordAt record = MiddleRecord(2);
  ResealRecord(Path(2), record, 8, record.seq + 1, 8);
  ExpectDamage(Path(2), record.offset,
               StrCat("sequence gap: expected seq ", record.seq, ", record has ", record.seq + 1), record.seq - 1, {});
}

TEST_P(LogCorruptionTest, RecordSequenceJumpInOlderSegmentIsDamage) {
  const RecordAt record = MiddleRecord(1);
  ResealRecord(Path(1), record, 8, record.seq + 1, 8);
  ExpectDamage(Path(1), record.offset,
               StrCat("sequence gap: expected seq ", record.seq, ", record has ", record.seq + 1), record.seq - 1,
               {Path(2)});
}

TEST_P(LogCorruptionTest, UndecodablePayloadIsDamage) {
  // A record with a valid checksum whose type this build does not know.
  const RecordAt record = MiddleRecord(2);
  ResealRecord(Path(2), record, 16, 14, 1);
  ExpectDamage(Path(2), record.offset, "unknown event type 14", record.seq - 1, {});
}

TEST_P(LogCorruptionTest, SegmentShorterThanHeaderIsTornTailWhenNewest) {
  const std::string path = StrCat(dir_, "/", logfmt::SegmentFileName(kThreeSegmentsLast + 1));
  WriteFileBytes(path, logfmt::EncodeFileHeader(kThreeSegmentsLast + 1).substr(0, 10));
  ExpectTornTail(path, 0, kThreeSegmentsLast);
}

TEST_P(LogCorruptionTest, SegmentShorterThanHeaderIsDamageWhenNotNewest) {
  TruncateFile(Path(1), 10);
  ExpectDamage(Path(1), 0, "segment is shorter (10 bytes) than its header", FirstSeq(1) - 1, {Path(2)});
}

TEST_P(LogCorruptionTest, BadFileHeaderIsDamage) {
  FlipByte(Path(1), 0);
  ExpectDamage(Path(1), 0, "not an event log segment (bad magic)", FirstSeq(1) - 1, {Path(2)});
}

TEST_P(LogCorruptionTest, BadFileHeaderInTheNewestSegmentIsDamage) {
  FlipByte(Path(2), 20);  // first_seq
  ExpectDamage(Path(2), 0, "file header checksum mismatch", FirstSeq(2) - 1, {});
}

TEST_P(LogCorruptionTest, HeaderSeqDifferentFromFileNameIsDamage) {
  WriteFileBytes(Path(2), logfmt::EncodeFileHeader(FirstSeq(2) + 1) + ReadFileBytes(Path(2)).substr(kHeader));
  ExpectDamage(Path(2), 0,
               StrCat("header says first seq ", FirstSeq(2) + 1, ", file name says ", FirstSeq(2)),
               FirstSeq(2) - 1, {});
}

// ---------------------------------------------------------------------------------
// Repair and what follows it.

TEST_F(ThreeSegmentLogTest, RepairCutsTornTailSoTheNextReadIsClean) {
  const RecordAt record = LastRecord(2);
  TruncateFile(Path(2), record.offset + kRecordHeader + 5);
  LogReadOptions options;
  options.repair = RepairMode::kRepair;
  const Read read = ReadDir(dir_, options);
  ASSERT_TRUE(read.result.ok()) << read.result.status();
  EXPECT_TRUE(read.result->torn_tail);
  EXPECT_EQ(read.result->tail_offset, record.offset);
  EXPECT_EQ(read.result->tail_bytes, kRecordHeader + 5);
  EXPECT_EQ(FileSize(Path(2)), record.offset);

  const Read again = ReadDir(dir_, options);
  ASSERT_TRUE(CleanRead(again, 1, record.seq - 1));
  EXPECT_EQ(again.result->tail_bytes, 0u);
  EXPECT_EQ(FileSize(Path(2)), record.offset);
}

TEST_F(ThreeSegmentLogTest, WriterAfterRepairContinuesTheSequence) {
  const RecordAt record = LastRecord(2);
  TruncateFile(Path(2), record.offset + 9);
  LogReadOptions options;
  options.repair = RepairMode::kRepair;
  const Read read = ReadDir(dir_, options);
  ASSERT_TRUE(read.result.ok()) << read.result.status();
  ASSERT_TRUE(read.result->torn_tail);
  const uint64_t last = read.result->last_seq;
  ASSERT_EQ(last, kThreeSegmentsLast - 1);

  std::unique_ptr<LogWriter> writer = NewWriter(last + 1);
  ASSERT_NE(writer, nullptr);
  CommitSamplesThrough(*writer, last + 30);
  writer.reset();
  const Read full = ReadDir(dir_);
  ASSERT_TRUE(CleanRead(full, 1, last + 30));
  EXPECT_EQ(full.result->segments_read, 4u);
}

TEST_F(ThreeSegmentLogTest, KeepPrefixRepairThenWriterGivesOneRun) {
  const RecordAt record = MiddleRecord(1);
  FlipByte(Path(1), record.offset + kRecordHeader);
  LogReadOptions options;
  options.repair = RepairMode::kRepair;
  options.damage = DamagePolicy::kKeepPrefix;
  const Read read = ReadDir(dir_, options);
  ASSERT_TRUE(read.result.ok()) << read.result.status();
  ASSERT_TRUE(read.result->damaged);
  ASSERT_EQ(read.result->last_seq, record.seq - 1);

  std::unique_ptr<LogWriter> writer = NewWriter(record.seq);
  ASSERT_NE(writer, nullptr);
  CommitSamplesThrough(*writer, record.seq + 20);
  EXPECT_TRUE(CleanRead(ReadDir(dir_), 1, record.seq + 20));
}

}  // namespace
}  // namespace wallet::shard
