// state_io.h — byte streams for saving and loading the engine's state.
//
// Engine::SaveState writes its whole state through a StateWriter; Engine::LoadState
// reads it back through a StateReader. Both use fixed-width little-endian integers
// (the stream's grammar is in engine.cc, above Engine::SaveState). The engine stays
// free of files and sockets: a StateWriter buffers what the engine puts (1 MiB by
// default) and hands each full buffer to Consume(), which a subclass sends where it
// wants (a string here; a file with a running CRC32C in snapshot.cc). A StateReader
// reads exact byte counts from one contiguous span (a string or a mapped file).
//
// Errors. Writers never fail towards the engine: a subclass whose destination
// fails remembers the error and drops the rest, and its owner checks it after
// Flush(). Readers are sticky: a read past the end yields zeros and sets failed(),
// so a decoder reads a whole item, then checks failed() once before using it.
//
// Example:
//   std::string bytes;
//   StringStateWriter writer(&bytes);
//   engine.SaveState(&writer);
//   writer.Flush();
//   StateReader reader(bytes);
//   absl::Status status = fresh_engine.LoadState(&reader);
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>

namespace wallet::shard {

static_assert(std::endian::native == std::endian::little,
              "state streams are little-endian; add byte swaps for this platform");

// Appends fixed-width little-endian values through Derived::Append(data, size).
// Shared by StateWriter and by the engine's digest item buffers, so that a digest
// and a snapshot encode an item the same way.
template <typename Derived>
class LittleEndianPut {
 public:
  void PutU8(uint8_t value) { Put(&value, 1); }
  void PutU16(uint16_t value) { Put(&value, 2); }
  void PutU32(uint32_t value) { Put(&value, 4); }
  void PutU64(uint64_t value) { Put(&value, 8); }
  void PutI64(int64_t value) { Put(&value, 8); }
  // Two's complement, low 64 bits first.
  void PutI128(__int128 value) { Put(&value, 16); }
  // A short string: one length byte (the caller keeps it <= 255 bytes), then bytes.
  void PutString8(std::string_view text) {
    PutU8(static_cast<uint8_t>(text.size()));
    Put(text.data(), text.size());
  }

 private:
  void Put(const void* data, size_t size_bytes) {
    static_cast<Derived*>(this)->Append(data, size_bytes);
  }
};

// A buffered byte sink for Engine::SaveState. Subclasses implement Consume().
// The owner calls Flush() after the last value (the destructor cannot: Consume is
// virtual). Not thread-safe; allocates its buffer once, in the constructor.
class StateWriter : public LittleEndianPut<StateWriter> {
 public:
  static constexpr size_t kDefaultBufferBytes = size_t{1} << 20;

  explicit StateWriter(size_t buffer_bytes = kDefaultBufferBytes)
      : buffer_(new char[buffer_bytes < 64 ? 64 : buffer_bytes]),
        capacity_bytes_(buffer_bytes < 64 ? 64 : buffer_bytes) {}
  StateWriter(const StateWriter&) = delete;
  StateWriter& operator=(const StateWriter&) = delete;
  virtual ~StateWriter() = default;

  // Copies `size_bytes` bytes into the buffer, handing full buffers to Consume().
  // Called by LittleEndianPut for every value.
  void Append(const void* data, size_t size_bytes) {
    if (size_bytes <= capacity_bytes_ - used_bytes_) {
      std::memcpy(buffer_.get() + used_bytes_, data, size_bytes);
      used_bytes_ += size_bytes;
      return;
    }
    AppendSlow(static_cast<const char*>(data), size_bytes);
  }

  // Hands whatever is buffered to Consume(). Called by the owner when done.
  void Flush() {
    if (used_bytes_ == 0) return;
    Consume(buffer_.get(), used_bytes_);
    consumed_bytes_ += used_bytes_;
    used_bytes_ = 0;
  }

  // Bytes put so far (buffered or consumed).
  uint64_t bytes_written() const { return consumed_bytes_ + used_bytes_; }

 protected:
  // Receives the next `size_bytes` bytes of the stream, in order.
  virtual void Consume(const char* data, size_t size_bytes) = 0;

 private:
  void AppendSlow(const char* data, size_t size_bytes) {
    while (size_bytes > 0) {
      if (used_bytes_ == capacity_bytes_) Flush();
      size_t chunk = capacity_bytes_ - used_bytes_;
      if (chunk > size_bytes) chunk = size_bytes;
      std::memcpy(buffer_.get() + used_bytes_, data, chunk);
      used_bytes_ += chunk;
      data += chunk;
      size_bytes -= chunk;
    }
  }

  std::unique_ptr<char[]> buffer_;
  size_t capacity_bytes_;
  size_t used_bytes_ = 0;
  uint64_t consumed_bytes_ = 0;
};

// A StateWriter that appends to a string (tests, benchmarks, in-memory copies).
// The string is not owned and must outlive the writer.
class StringStateWriter : public StateWriter {
 public:
  explicit StringStateWriter(std::string* out, size_t buffer_bytes = size_t{64} << 10)
      : StateWriter(buffer_bytes), out_(out) {}

 protected:
  void Consume(const char* data, size_t size_bytes) override { out_->append(data, size_bytes); }

 private:
  std::string* out_;
};

// Reads fixed-width little-endian values from one contiguous span of bytes, which
// must outlive the reader. offset() counts from `base_offset_bytes`, so that a
// reader over part of a file reports file offsets in its callers' messages.
class StateReader {
 public:
  explicit StateReader(std::string_view data, uint64_t base_offset_bytes = 0)
      : begin_(data.data()), pos_(data.data()), end_(data.data() + data.size()),
        base_offset_bytes_(base_offset_bytes) {}

  uint8_t GetU8() { return Get<uint8_t>(); }
  uint16_t GetU16() { return Get<uint16_t>(); }
  uint32_t GetU32() { return Get<uint32_t>(); }
  uint64_t GetU64() { return Get<uint64_t>(); }
  int64_t GetI64() { return Get<int64_t>(); }
  __int128 GetI128() { return Get<__int128>(); }
  // A string written by PutString8. Empty on failure.
  std::string_view GetString8() { return GetBytes(GetU8()); }
  // The next `size_bytes` bytes, borrowed from the span; empty (and failed()) when
  // fewer remain.
  std::string_view GetBytes(size_t size_bytes) {
    if (failed_ || size_bytes > remaining_bytes()) {
      failed_ = true;
      pos_ = end_;
      return std::string_view();
    }
    std::string_view out(pos_, size_bytes);
    pos_ += size_bytes;
    return out;
  }

  // True once any read ran past the end (sticky).
  bool failed() const { return failed_; }
  size_t remaining_bytes() const { return static_cast<size_t>(end_ - pos_); }
  bool at_end() const { return pos_ == end_; }
  // Position of the next byte, counted from base_offset_bytes.
  uint64_t offset() const { return base_offset_bytes_ + static_cast<uint64_t>(pos_ - begin_); }

 private:
  template <typename T>
  T Get() {
    T value{};
    if (failed_ || sizeof(T) > remaining_bytes()) {
      failed_ = true;
      pos_ = end_;
      return value;
    }
    std::memcpy(&value, pos_, sizeof(T));
    pos_ += sizeof(T);
    return value;
  }

  const char* begin_;
  const char* pos_;
  const char* end_;
  uint64_t base_offset_bytes_;
  bool failed_ = false;
};

}  // namespace wallet::shard
