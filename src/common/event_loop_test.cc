// event_loop_test.cc — EventLoop with real pipes, real timers and real threads.
// Nothing asserts on timing; deadlines only bound how long a broken loop can hang.
#include "common/event_loop.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace wallet {
namespace {

constexpr int64_t kHangLimitMs = 20'000;  // bounds a hang, never a success

std::unique_ptr<EventLoop> MakeLoop(const EventLoopOptions& options = {}) {
  auto loop = EventLoop::Create(options);
  EXPECT_TRUE(loop.ok()) << loop.status();
  return loop.ok() ? std::move(*loop) : nullptr;
}

// Runs turns until `done` holds; false when kHangLimitMs passes first.
bool RunUntil(EventLoop& loop, absl::FunctionRef<bool()> done) { return loop.RunUntil(done, kHangLimitMs).ok(); }

// A non-blocking pipe closed at the end of the test.
struct Pipe {
  int read_fd = -1;
  int write_fd = -1;
  Pipe() {
    int fds[2];
    EXPECT_EQ(pipe2(fds, O_NONBLOCK | O_CLOEXEC), 0);
    read_fd = fds[0];
    write_fd = fds[1];
  }
  ~Pipe() {
    if (read_fd >= 0) close(read_fd);
    if (write_fd >= 0) close(write_fd);
  }
  void CloseWriteEnd() {
    close(write_fd);
    write_fd = -1;
  }
};

TEST(EventLoopTest, PipeReadableCallsTheWatcherWithTheBytes) {
  auto loop = MakeLoop();
  Pipe pipe;
  std::string received;
  auto watch = loop->WatchFd(pipe.read_fd, FdInterest::kRead, [&](FdReadiness ready) {
    ASSERT_TRUE(ready.readable);
    char buffer[64];
    ssize_t got = read(pipe.read_fd, buffer, sizeof(buffer));
    if (got > 0) received.append(buffer, static_cast<size_t>(got));
  });
  ASSERT_TRUE(watch.ok()) << watch.status();
  ASSERT_EQ(write(pipe.write_fd, "hello", 5), 5);
  ASSERT_TRUE(RunUntil(*loop, [&] { return received == "hello"; }));
  ASSERT_EQ(write(pipe.write_fd, " world", 6), 6);
  ASSERT_TRUE(RunUntil(*loop, [&] { return received == "hello world"; }));
  loop->UnwatchFd(*watch);
  EXPECT_EQ(loop->watcher_count(), 0u);
}

TEST(EventLoopTest, WritableInterestCanBeTurnedOnAndOff) {
  auto loop = MakeLoop();
  Pipe pipe;
  int writable_calls = 0;
  auto watch = loop->WatchFd(pipe.write_fd, FdInterest::kNone, [&](FdReadiness ready) {
    EXPECT_TRUE(ready.writable);
    EXPECT_FALSE(ready.readable);
    ++writable_calls;
  });
  ASSERT_TRUE(watch.ok()) << watch.status();
  ASSERT_TRUE(loop->RunOnce(0).ok());
  EXPECT_EQ(writable_calls, 0);  // no interest, no calls
  ASSERT_TRUE(loop->SetFdInterest(*watch, FdInterest::kWrite).ok());
  ASSERT_TRUE(loop->SetFdInterest(*watch, FdInterest::kWrite).ok());  // unchanged: no-op
  ASSERT_TRUE(RunUntil(*loop, [&] { return writable_calls > 0; }));
  ASSERT_TRUE(loop->SetFdInterest(*watch, FdInterest::kNone).ok());
  int calls_before = writable_calls;
  ASSERT_TRUE(loop->RunOnce(0).ok());
  EXPECT_EQ(writable_calls, calls_before);
  EXPECT_TRUE(absl::IsNotFound(loop->SetFdInterest(*watch + 100, FdInterest::kRead)));
}

TEST(EventLoopTest, HangUpIsReportedAsReadableAndAWatcherMayRemoveItself) {
  auto loop = MakeLoop();
  Pipe pipe;
  int calls = 0;
  bool end_of_file = false;
  EventLoop::WatchId id = 0;
  auto watch = loop->WatchFd(pipe.read_fd, FdInterest::kRead, [&](FdReadiness ready) {
    ++calls;
    EXPECT_TRUE(ready.readable);
    char buffer[8];
    if (read(pipe.read_fd, buffer, sizeof(buffer)) == 0) end_of_file = true;
    loop->UnwatchFd(id);  // its own watcher, from inside its callback
  });
  ASSERT_TRUE(watch.ok()) << watch.status();
  id = *watch;
  pipe.CloseWriteEnd();
  ASSERT_TRUE(RunUntil(*loop, [&] { return calls > 0; }));
  EXPECT_TRUE(end_of_file);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(loop->RunOnce(0).ok());
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(loop->watcher_count(), 0u);
}

TEST(EventLoopTest, SecondWatcherOnOneFdIsRefused) {
  auto loop = MakeLoop();
  Pipe pipe;
  auto first = loop->WatchFd(pipe.read_fd, FdInterest::kRead, [](FdReadiness) {});
  ASSERT_TRUE(first.ok());
  auto second = loop->WatchFd(pipe.read_fd, FdInterest::kRead, [](FdReadiness) {});
  EXPECT_TRUE(absl::IsAlreadyExists(second.status())) << second.status();
  EXPECT_TRUE(absl::IsInvalidArgument(loop->WatchFd(-1, FdInterest::kRead, [](FdReadiness) {}).status()));
}

TEST(EventLoopTest, TimersFireInDeadlineOrderThenCreationOrder) {
  auto loop = MakeLoop();
  std::vector<std::string> fired;
  loop->RunAfter(30, [&] { fired.push_back("30ms"); });
  loop->RunAfter(10, [&] { fired.push_back("10ms-a"); });
  loop->RunAfter(20, [&] { fired.push_back("20ms"); });
  loop->RunAfter(10, [&] { fired.push_back("10ms-b"); });
  loop->RunAfter(0, [&] { fired.push_back("0ms"); });
  EventLoop::TimerId cancelled = loop->RunAfter(15, [&] { fired.push_back("cancelled"); });
  loop->CancelTimer(cancelled);
  ASSERT_TRUE(RunUntil(*loop, [&] { return fired.size() == 5; }));
  EXPECT_EQ(fired, (std::vector<std::string>{"0ms", "10ms-a", "10ms-b", "20ms", "30ms"}));
  EXPECT_EQ(loop->timer_count(), 0u);
}

TEST(EventLoopTest, PeriodicTimerRepeatsUntilItCancelsItself) {
  auto loop = MakeLoop();
  int ticks = 0;
  EventLoop::TimerId id = 0;
  id = loop->RunEvery(1, [&] {
    if (++ticks == 3) loop->CancelTimer(id);
  });
  ASSERT_TRUE(RunUntil(*loop, [&] { return ticks == 3; }));
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(loop->RunOnce(2).ok());
  EXPECT_EQ(ticks, 3);
  EXPECT_EQ(loop->timer_count(), 0u);
}

TEST(EventLoopTest, TimerCreatedInsideATimerRunsInALaterTurn) {
  auto loop = MakeLoop();
  std::vector<int> fired;
  loop->RunAfter(0, [&] {
    fired.push_back(1);
    loop->RunAfter(0, [&] { fired.push_back(2); });
  });
  ASSERT_TRUE(RunUntil(*loop, [&] { return !fired.empty(); }));
  EXPECT_EQ(fired, (std::vector<int>{1}));  // not in the turn that created it
  ASSERT_TRUE(loop->RunOnce(0).ok());
  EXPECT_EQ(fired, (std::vector<int>{1, 2}));
}

TEST(EventLoopTest, PostFromOtherThreadsRunsOnTheLoopThreadInOrder) {
  auto loop = MakeLoop();
  constexpr int kPerThread = 5000;
  std::thread::id loop_thread = std::this_thread::get_id();
  std::vector<int> seen_a, seen_b;
  std::atomic<int> off_thread_runs{0};
  auto poster = [&](std::vector<int>* seen) {
    for (int i = 0; i < kPerThread; ++i) {
      absl::Status status;
      do {  // the queue is bounded: a full queue asks the poster to come back
        status = loop->Post([&, seen, i] {
          if (std::this_thread::get_id() != loop_thread) off_thread_runs++;
          seen->push_back(i);
        });
        if (!status.ok()) std::this_thread::yield();
      } while (absl::IsResourceExhausted(status));
      ASSERT_TRUE(status.ok()) << status;
    }
  };
  std::thread a(poster, &seen_a);
  std::thread b(poster, &seen_b);
  bool done = RunUntil(*loop, [&] { return seen_a.size() == kPerThread && seen_b.size() == kPerThread; });
  a.join();
  b.join();
  ASSERT_TRUE(done);
  EXPECT_EQ(off_thread_runs.load(), 0);
  for (int i = 0; i < kPerThread; ++i) {
    ASSERT_EQ(seen_a[i], i);
    ASSERT_EQ(seen_b[i], i);
  }
}

TEST(EventLoopTest, PostQueueIsBoundedAndTasksPerTurnAreBounded) {
  EventLoopOptions options;
  options.max_posted_tasks = 3;
  options.max_tasks_per_turn = 2;
  auto loop = MakeLoop(options);
  int runs = 0;
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(loop->Post([&] { ++runs; }).ok());
  absl::Status full = loop->Post([&] { ++runs; });
  EXPECT_TRUE(absl::IsResourceExhausted(full)) << full;
  ASSERT_TRUE(loop->RunOnce(0).ok());
  EXPECT_EQ(runs, 2);  // the per-turn bound
  ASSERT_TRUE(loop->RunOnce(0).ok());
  EXPECT_EQ(runs, 3);
}

TEST(EventLoopTest, StopFromAnotherThreadEndsRun) {
  auto loop = MakeLoop();
  std::atomic<bool> ticked{false};
  loop->RunEvery(1, [&] { ticked = true; });
  std::thread stopper([&] {
    while (!ticked) std::this_thread::yield();
    loop->Stop();
  });
  EXPECT_TRUE(loop->Run().ok());
  stopper.join();
  EXPECT_TRUE(ticked);
}

TEST(EventLoopTest, StopBeforeRunMakesRunReturnAfterOneTurn) {
  auto loop = MakeLoop();
  bool posted_ran = false;
  ASSERT_TRUE(loop->Post([&] { posted_ran = true; }).ok());
  loop->Stop();
  EXPECT_TRUE(loop->Run().ok());
  EXPECT_TRUE(posted_ran);
}

EventLoop* g_signal_loop = nullptr;

void StopLoopOnSignal(int) { g_signal_loop->Stop(); }

TEST(EventLoopTest, StopFromASignalHandlerEndsRun) {
  auto loop = MakeLoop();
  g_signal_loop = loop.get();
  struct sigaction action = {};
  struct sigaction previous = {};
  action.sa_handler = StopLoopOnSignal;
  sigemptyset(&action.sa_mask);
  ASSERT_EQ(sigaction(SIGUSR1, &action, &previous), 0);
  loop->RunAfter(1, [] { raise(SIGUSR1); });
  EXPECT_TRUE(loop->Run().ok());
  sigaction(SIGUSR1, &previous, nullptr);
  g_signal_loop = nullptr;
}

TEST(EventLoopTest, RunUntilReturnsWhenDoneOrAtItsDeadline) {
  auto loop = MakeLoop();
  bool fired = false;
  loop->RunAfter(1, [&] { fired = true; });
  EXPECT_TRUE(loop->RunUntil([&] { return fired; }, kHangLimitMs).ok());
  absl::Status never = loop->RunUntil([] { return false; }, 20);
  EXPECT_TRUE(absl::IsDeadlineExceeded(never)) << never;
}

TEST(EventLoopTest, NowMsIsMonotonicAcrossTurns) {
  auto loop = MakeLoop();
  int64_t before_ms = loop->now_ms();
  ASSERT_TRUE(loop->RunOnce(2).ok());
  EXPECT_GE(loop->now_ms(), before_ms);
  EXPECT_LE(loop->now_ms(), MonotonicNowMs());
}

}  // namespace
}  // namespace wallet
