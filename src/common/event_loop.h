// event_loop.h — a small single-threaded epoll event loop for the router and the
// cross-shard executors: file-descriptor watchers, one-shot and periodic timers in
// milliseconds, and tasks posted from other threads.
//
// One turn of the loop:
//   1. wait in epoll_wait until a watched fd is ready, the earliest timer is due, a
//      task is posted or Stop() is called (no wait at all when work is left over);
//   2. refresh now_ms();
//   3. run the ready fd callbacks (at most max_fd_events_per_turn);
//   4. run the due timers in deadline order, ties in creation order (at most
//      max_timers_per_turn; a periodic timer fires at most once per turn, and a
//      timer created by a timer callback fires in a later turn);
//   5. run posted tasks in the order they were posted (at most max_tasks_per_turn).
// Work left over by a bound runs in the next turn, so no single source (a flood of
// posts, thousands of due timers) can starve the others.
//
// Example:
//   auto loop = EventLoop::Create();
//   if (!loop.ok()) return loop.status();
//   auto watch = (*loop)->WatchFd(fd, FdInterest::kRead, [&](FdReadiness ready) {
//     if (ready.readable) ReadFrom(fd);
//   });
//   (*loop)->RunEvery(1000, [&] { PrintStats(); });
//   std::thread worker([&] { (*loop)->Post([] { LogInfo("hello from the loop"); }); });
//   absl::Status status = (*loop)->Run();   // until Stop(), from any thread
//
// Threading: the loop belongs to the thread that runs it. Post() and Stop() are the
// only calls that may come from any thread; Stop() is also safe in a signal handler
// (it sets a lock-free atomic flag and writes to an eventfd). Every other call must
// come from the loop thread, or from any one thread while the loop is not running
// (to set things up before Run() or tear them down after it).
//
// Ownership: the loop owns its epoll fd, its eventfd and the callbacks it is given.
// It never owns or closes a watched fd: the caller must UnwatchFd() before closing
// it. A callback may add or remove any watcher or timer, including its own: the
// callback object stays alive until it returns. Callbacks run on the loop thread
// only, never inside the call that registered them.
//
// Not reentrant: Run()/RunOnce() must not be called from inside a callback.
#pragma once

#include <sys/epoll.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <queue>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace wallet {

// The monotonic clock (CLOCK_MONOTONIC) in milliseconds. Only differences mean
// anything; it never goes backwards and does not follow changes of the wall clock.
int64_t MonotonicNowMs();

// Which readiness a watcher asks for.
enum class FdInterest : uint8_t { kNone = 0, kRead = 1, kWrite = 2, kReadWrite = 3 };

// What an fd callback is told. An error or hang-up on the fd sets every flag the
// watcher is interested in, so the callback finds the error on its next read/write.
struct FdReadiness {
  bool readable = false;
  bool writable = false;
};

struct EventLoopOptions {
  size_t max_fd_events_per_turn = 256;   // epoll_wait's maxevents
  size_t max_timers_per_turn = 1024;     // due timers run in one turn
  size_t max_tasks_per_turn = 1024;      // posted tasks run in one turn
  size_t max_posted_tasks = 1u << 16;    // Post() past this: ResourceExhausted
};

class EventLoop {
 public:
  using WatchId = uint64_t;  // never 0, never reused by one loop
  using TimerId = uint64_t;  // never 0, never reused by one loop
  using FdCallback = absl::AnyInvocable<void(FdReadiness)>;
  using Callback = absl::AnyInvocable<void()>;

  // Creates a loop (its epoll fd and eventfd). Internal when the kernel refuses.
  static absl::StatusOr<std::unique_ptr<EventLoop>> Create(const EventLoopOptions& options = {});

  // Destroys the callbacks still registered (without calling them) and closes the
  // loop's own fds. Must not run while Run()/RunOnce() does.
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // --- Watchers (loop thread). -------------------------------------------------

  // Watches `fd` (level-triggered) and calls `callback` on the loop thread while it
  // is ready for what `interest` asks. One fd may have one watcher at a time
  // (AlreadyExists from the kernel otherwise). Used by the hiredis adapter and by
  // servers for their sockets.
  absl::StatusOr<WatchId> WatchFd(int fd, FdInterest interest, FdCallback callback);
  // Changes what a watcher asks for; a no-op when unchanged (callers such as hiredis
  // call this on every command). kNone takes the fd out of epoll until asked again,
  // so a hung-up fd nobody reads cannot make the loop spin. NotFound for an unknown
  // id.
  absl::Status SetFdInterest(WatchId id, FdInterest interest);
  // Stops watching (a no-op for an unknown id). Call before closing the fd. The
  // callback is destroyed after the current turn's callbacks have returned.
  void UnwatchFd(WatchId id);

  // --- Timers (loop thread). ---------------------------------------------------

  // Calls `callback` once, `delay_ms` (>= 0) after now_ms(), on the loop thread.
  TimerId RunAfter(int64_t delay_ms, Callback callback);
  // Calls `callback` every `period_ms` (>= 1) from now_ms() on. A late turn does not
  // make it fire in a burst: the next deadline is measured from when it fired.
  TimerId RunEvery(int64_t period_ms, Callback callback);
  // Cancels a timer (a no-op for an unknown or already fired one-shot timer). A
  // periodic timer may cancel itself from its own callback.
  void CancelTimer(TimerId id);

  // --- Any thread. -------------------------------------------------------------

  // Queues `task` to run on the loop thread in a coming turn (FIFO) and wakes the
  // loop. ResourceExhausted when max_posted_tasks are already waiting (the task is
  // dropped uncalled). Tasks still queued when the loop is destroyed are destroyed
  // uncalled.
  absl::Status Post(Callback task);
  // Makes Run() return after the turn in progress (or the next one, if called while
  // the loop is idle or not running yet). Async-signal-safe.
  void Stop();

  // --- Running (one thread at a time). -----------------------------------------

  // Runs turns until Stop(). Internal if epoll_wait fails other than by EINTR.
  absl::Status Run();
  // Runs one turn, waiting at most `max_wait_ms` (0: do not wait) for something to
  // do. For tests and for callers that own the thread's main loop.
  absl::Status RunOnce(int64_t max_wait_ms);

  // Runs turns until `done()` holds (checked before every turn, each of which waits
  // at most 10 ms) or `timeout_ms` has passed: DeadlineExceeded then. For tests, and
  // for draining replies at shutdown.
  absl::Status RunUntil(absl::FunctionRef<bool()> done, int64_t timeout_ms);

  // The monotonic time (MonotonicNowMs) read at the start of the current turn:
  // cheap, and the same for every callback of a turn. Updated by each turn.
  int64_t now_ms() const { return now_ms_; }

  // Counts for tests and metrics.
  size_t watcher_count() const { return watchers_.size(); }
  size_t timer_count() const { return timers_.size(); }

 private:
  struct Watcher {
    int fd = -1;
    FdInterest interest = FdInterest::kNone;
    bool in_epoll = false;  // registered with epoll_ctl (interest != kNone)
    FdCallback callback;
  };
  struct Timer {
    int64_t period_ms = 0;  // 0: one-shot
    Callback callback;      // empty while the timer's callback runs
  };
  struct HeapEntry {
    int64_t deadline_ms;
    TimerId id;  // ties: lower id (created earlier) first
    bool operator>(const HeapEntry& other) const {
      return deadline_ms != other.deadline_ms ? deadline_ms > other.deadline_ms : id > other.id;
    }
  };

  EventLoop(const EventLoopOptions& options, int epoll_fd, int wake_fd);
  // RunAfter and RunEvery: registers the timer and its first deadline.
  TimerId AddTimer(int64_t delay_ms, int64_t period_ms, Callback callback);
  // Checks that a loop-thread-only call comes from the loop thread (or that the loop
  // is not running). Aborts otherwise: a data race on the loop would be a bug.
  void CheckLoopThread() const;
  // Applies `interest` to the kernel's epoll set for `watcher`.
  absl::Status UpdateEpoll(WatchId id, Watcher& watcher, FdInterest interest);
  // How long the next epoll_wait may block, capped by `max_wait_ms`.
  int WaitTimeoutMs(int64_t max_wait_ms);
  // Turn steps 3 to 5 (see the top of this file), each within its per-turn bound.
  void DispatchFdEvents(int ready_count);
  void RunDueTimers();
  void RunPostedTasks();
  // Resets the eventfd after a wake-up from Post() or Stop().
  void DrainWakeFd();

  const EventLoopOptions options_;
  const int epoll_fd_;
  const int wake_fd_;  // eventfd: written by Post() and Stop()
  int64_t now_ms_ = 0;

  // The thread inside Run()/RunOnce(), while one is.
  std::atomic<bool> running_{false};
  std::thread::id loop_thread_;

  WatchId next_watch_id_ = 1;
  absl::flat_hash_map<WatchId, std::unique_ptr<Watcher>> watchers_;
  // Watchers removed during a turn; destroyed at the start of the next one, when
  // none of their callbacks can be running.
  std::vector<std::unique_ptr<Watcher>> retired_watchers_;

  TimerId next_timer_id_ = 1;
  absl::flat_hash_map<TimerId, Timer> timers_;
  // Deadlines; entries of cancelled timers stay until they surface and are skipped.
  std::priority_queue<HeapEntry, std::vector<HeapEntry>, std::greater<HeapEntry>> timer_heap_;

  std::atomic<bool> stop_requested_{false};
  // Posted tasks, bounded by max_posted_tasks.
  std::mutex posted_mutex_;
  std::deque<Callback> posted_;                // guarded by posted_mutex_
  bool wake_pending_ = false;                  // guarded by posted_mutex_
  bool posted_left_over_ = false;              // loop thread: tasks remain after a turn

  std::vector<epoll_event> ready_;             // scratch for epoll_wait
};

}  // namespace wallet
