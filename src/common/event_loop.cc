#include "common/event_loop.h"

#include <errno.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <string>
#include <utility>

#include "common/check.h"
#include "common/strings.h"

namespace wallet {

namespace {

// epoll data of the loop's own eventfd; watcher ids start at 1.
constexpr uint64_t kWakeId = 0;

// "what: strerror(error)"; callers pass errno read right after the failing call.
std::string ErrnoMessage(std::string_view what, int error) {
  return StrCat(what, ": ", std::strerror(error));
}

uint32_t EpollEventsFor(FdInterest interest) {
  uint32_t events = 0;
  if (interest == FdInterest::kRead || interest == FdInterest::kReadWrite) events |= EPOLLIN;
  if (interest == FdInterest::kWrite || interest == FdInterest::kReadWrite) events |= EPOLLOUT;
  return events;
}

}  // namespace

int64_t MonotonicNowMs() {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<int64_t>(now.tv_sec) * 1000 + now.tv_nsec / 1'000'000;
}

absl::StatusOr<std::unique_ptr<EventLoop>> EventLoop::Create(const EventLoopOptions& options) {
  int epoll_fd = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd < 0) return absl::InternalError(ErrnoMessage("epoll_create1", errno));
  int wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd < 0) {
    std::string message = ErrnoMessage("eventfd", errno);
    close(epoll_fd);
    return absl::InternalError(message);
  }
  struct epoll_event event;
  std::memset(&event, 0, sizeof(event));
  event.events = EPOLLIN;
  event.data.u64 = kWakeId;
  if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, wake_fd, &event) != 0) {
    std::string message = ErrnoMessage("epoll_ctl add eventfd", errno);
    close(wake_fd);
    close(epoll_fd);
    return absl::InternalError(message);
  }
  return std::unique_ptr<EventLoop>(new EventLoop(options, epoll_fd, wake_fd));
}

EventLoop::EventLoop(const EventLoopOptions& options, int epoll_fd, int wake_fd)
    : options_(options), epoll_fd_(epoll_fd), wake_fd_(wake_fd), now_ms_(MonotonicNowMs()) {
  ready_.resize(std::max<size_t>(1, options_.max_fd_events_per_turn));
}

EventLoop::~EventLoop() {
  WALLET_CHECK(!running_.load(), "an EventLoop was destroyed while it was running");
  close(wake_fd_);
  close(epoll_fd_);
}

void EventLoop::CheckLoopThread() const {
  if (running_.load(std::memory_order_acquire)) {
    WALLET_CHECK(std::this_thread::get_id() == loop_thread_,
                 "an EventLoop call that is not thread-safe came from another thread");
  }
}

// --- Watchers -----------------------------------------------------------------

absl::Status EventLoop::UpdateEpoll(WatchId id, Watcher& watcher, FdInterest interest) {
  if (interest == FdInterest::kNone) {
    if (watcher.in_epoll) {
      // ENOENT/EBADF: the fd was already closed (and so left the set); nothing to do.
      epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, watcher.fd, nullptr);
      watcher.in_epoll = false;
    }
    watcher.interest = interest;
    return absl::OkStatus();
  }
  struct epoll_event event;
  std::memset(&event, 0, sizeof(event));
  event.events = EpollEventsFor(interest);
  event.data.u64 = id;
  int op = watcher.in_epoll ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
  if (epoll_ctl(epoll_fd_, op, watcher.fd, &event) != 0) {
    int error = errno;
    std::string message = ErrnoMessage(StrCat("epoll_ctl fd ", watcher.fd), error);
    return error == EEXIST ? absl::AlreadyExistsError(message) : absl::InternalError(message);
  }
  watcher.in_epoll = true;
  watcher.interest = interest;
  return absl::OkStatus();
}

absl::StatusOr<EventLoop::WatchId> EventLoop::WatchFd(int fd, FdInterest interest, FdCallback callback) {
  CheckLoopThread();
  if (fd < 0) return absl::InvalidArgumentError(StrCat("cannot watch fd ", fd));
  auto watcher = std::make_unique<Watcher>();
  watcher->fd = fd;
  watcher->callback = std::move(callback);
  WatchId id = next_watch_id_++;
  absl::Status status = UpdateEpoll(id, *watcher, interest);
  if (!status.ok()) return status;
  watchers_.emplace(id, std::move(watcher));
  return id;
}

absl::Status EventLoop::SetFdInterest(WatchId id, FdInterest interest) {
  CheckLoopThread();
  auto it = watchers_.find(id);
  if (it == watchers_.end()) return absl::NotFoundError(StrCat("no fd watcher ", id));
  if (it->second->interest == interest) return absl::OkStatus();
  return UpdateEpoll(id, *it->second, interest);
}

void EventLoop::UnwatchFd(WatchId id) {
  CheckLoopThread();
  auto it = watchers_.find(id);
  if (it == watchers_.end()) return;
  if (it->second->in_epoll) epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, it->second->fd, nullptr);
  retired_watchers_.push_back(std::move(it->second));
  watchers_.erase(it);
}

// --- Timers -------------------------------------------------------------------

EventLoop::TimerId EventLoop::AddTimer(int64_t delay_ms, int64_t period_ms, Callback callback) {
  CheckLoopThread();
  TimerId id = next_timer_id_++;
  timers_.emplace(id, Timer{period_ms, std::move(callback)});
  timer_heap_.push(HeapEntry{now_ms_ + std::max<int64_t>(0, delay_ms), id});
  return id;
}

EventLoop::TimerId EventLoop::RunAfter(int64_t delay_ms, Callback callback) {
  return AddTimer(delay_ms, 0, std::move(callback));
}

EventLoop::TimerId EventLoop::RunEvery(int64_t period_ms, Callback callback) {
  period_ms = std::max<int64_t>(1, period_ms);
  return AddTimer(period_ms, period_ms, std::move(callback));
}

void EventLoop::CancelTimer(TimerId id) {
  CheckLoopThread();
  timers_.erase(id);  // its heap entry is skipped when it surfaces
}

void EventLoop::RunDueTimers() {
  size_t fired = 0;
  // Periodic timers go back into the heap after the loop, so each fires at most
  // once per turn however small its period.
  // Timers created by these callbacks wait for the next turn too.
  std::vector<HeapEntry> again;
  const TimerId first_new_id = next_timer_id_;
  while (!timer_heap_.empty() && fired < options_.max_timers_per_turn) {
    HeapEntry top = timer_heap_.top();
    if (top.deadline_ms > now_ms_) break;
    timer_heap_.pop();
    if (top.id >= first_new_id) {
      again.push_back(top);
      continue;
    }
    auto it = timers_.find(top.id);
    if (it == timers_.end()) continue;  // cancelled
    ++fired;
    int64_t period_ms = it->second.period_ms;
    // The callback leaves the map while it runs, so that cancelling (or creating)
    // timers inside it cannot destroy or move it.
    Callback callback = std::move(it->second.callback);
    if (period_ms == 0) timers_.erase(it);
    callback();
    if (period_ms > 0) {
      auto still = timers_.find(top.id);
      if (still == timers_.end()) continue;  // cancelled itself
      still->second.callback = std::move(callback);
      again.push_back(HeapEntry{now_ms_ + period_ms, top.id});
    }
  }
  for (const HeapEntry& entry : again) timer_heap_.push(entry);
}

// --- Posted tasks ---------------------------------------------------------------

absl::Status EventLoop::Post(Callback task) {
  bool wake = false;
  {
    std::lock_guard<std::mutex> lock(posted_mutex_);
    if (posted_.size() >= options_.max_posted_tasks) {
      return absl::ResourceExhaustedError(
          StrCat("event loop task queue is full (", options_.max_posted_tasks, " tasks)"));
    }
    posted_.push_back(std::move(task));
    wake = !wake_pending_;
    wake_pending_ = true;
  }
  if (wake) {
    uint64_t one = 1;
    // EAGAIN only when the counter is saturated, which still wakes the loop.
    [[maybe_unused]] ssize_t written = write(wake_fd_, &one, sizeof(one));
  }
  return absl::OkStatus();
}

void EventLoop::RunPostedTasks() {
  std::vector<Callback> batch;
  {
    std::lock_guard<std::mutex> lock(posted_mutex_);
    if (posted_.empty()) return;
    size_t take = std::min(posted_.size(), options_.max_tasks_per_turn);
    batch.reserve(take);
    for (size_t i = 0; i < take; ++i) {
      batch.push_back(std::move(posted_.front()));
      posted_.pop_front();
    }
    posted_left_over_ = !posted_.empty();
    // While tasks are left over, posters need not write the eventfd: the next turn
    // does not wait (see WaitTimeoutMs).
    wake_pending_ = posted_left_over_;
  }
  for (Callback& task : batch) task();
}

void EventLoop::Stop() {
  stop_requested_.store(true);
  uint64_t one = 1;
  [[maybe_unused]] ssize_t written = write(wake_fd_, &one, sizeof(one));
}

void EventLoop::DrainWakeFd() {
  uint64_t value;
  [[maybe_unused]] ssize_t got = read(wake_fd_, &value, sizeof(value));
}

// --- Running ------------------------------------------------------------------------

int EventLoop::WaitTimeoutMs(int64_t max_wait_ms) {
  if (posted_left_over_ || stop_requested_.load()) return 0;
  // Drop cancelled timers from the top so they cause no early wake-up.
  while (!timer_heap_.empty() && !timers_.contains(timer_heap_.top().id)) timer_heap_.pop();
  int64_t wait_ms = max_wait_ms;  // negative: no limit
  if (!timer_heap_.empty()) {
    int64_t until_timer_ms = std::max<int64_t>(0, timer_heap_.top().deadline_ms - MonotonicNowMs());
    wait_ms = wait_ms < 0 ? until_timer_ms : std::min(wait_ms, until_timer_ms);
  }
  if (wait_ms < 0) return -1;
  return static_cast<int>(std::min<int64_t>(wait_ms, INT_MAX));
}

void EventLoop::DispatchFdEvents(int ready_count) {
  for (int i = 0; i < ready_count; ++i) {
    uint64_t id = ready_[i].data.u64;
    uint32_t events = ready_[i].events;
    if (id == kWakeId) {
      DrainWakeFd();
      continue;
    }
    auto it = watchers_.find(id);
    if (it == watchers_.end()) continue;  // removed earlier in this turn
    // The watcher object outlives this call even if the callback unwatches it: it
    // moves to retired_watchers_, which is cleared only at the next turn's start.
    Watcher* watcher = it->second.get();
    uint32_t interest = EpollEventsFor(watcher->interest);
    bool failed = (events & (EPOLLERR | EPOLLHUP)) != 0;
    FdReadiness readiness;
    readiness.readable = (interest & EPOLLIN) != 0 && (failed || (events & EPOLLIN) != 0);
    readiness.writable = (interest & EPOLLOUT) != 0 && (failed || (events & EPOLLOUT) != 0);
    if (!readiness.readable && !readiness.writable) continue;
    watcher->callback(readiness);
  }
}

absl::Status EventLoop::RunOnce(int64_t max_wait_ms) {
  WALLET_CHECK(!running_.load(), "EventLoop::RunOnce called while the loop is running");
  loop_thread_ = std::this_thread::get_id();
  running_.store(true, std::memory_order_release);
  retired_watchers_.clear();
  int timeout_ms = WaitTimeoutMs(max_wait_ms);
  int ready_count = epoll_wait(epoll_fd_, ready_.data(), static_cast<int>(ready_.size()), timeout_ms);
  absl::Status status;
  if (ready_count < 0) {
    int error = errno;
    if (error != EINTR) status = absl::InternalError(ErrnoMessage("epoll_wait", error));
    ready_count = 0;
  }
  now_ms_ = MonotonicNowMs();
  DispatchFdEvents(ready_count);
  RunDueTimers();
  RunPostedTasks();
  running_.store(false, std::memory_order_release);
  return status;
}

absl::Status EventLoop::Run() {
  for (;;) {
    absl::Status status = RunOnce(-1);
    if (!status.ok()) return status;
    if (stop_requested_.exchange(false)) return absl::OkStatus();
  }
}

absl::Status EventLoop::RunUntil(absl::FunctionRef<bool()> done, int64_t timeout_ms) {
  constexpr int64_t kMaxTurnWaitMs = 10;  // `done` may depend on other threads
  int64_t deadline_ms = MonotonicNowMs() + timeout_ms;
  while (!done()) {
    int64_t left_ms = deadline_ms - MonotonicNowMs();
    if (left_ms <= 0) return absl::DeadlineExceededError(StrCat("not done within ", timeout_ms, " ms"));
    absl::Status status = RunOnce(std::min(left_ms, kMaxTurnWaitMs));
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

}  // namespace wallet
