#include "common/log.h"

#include <sys/time.h>
#include <unistd.h>

#include <cstdarg>
#include <cstdio>
#include <ctime>

namespace wallet {

namespace {
const char* program_name = "wallet";

void LogLine(char level, const char* format, va_list args) {
  struct timeval now;
  gettimeofday(&now, nullptr);
  struct tm utc;
  gmtime_r(&now.tv_sec, &utc);
  char stamp[32];
  strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &utc);
  char message[2048];
  vsnprintf(message, sizeof(message), format, args);
  std::fprintf(stderr, "%s.%03ldZ %s[%d] %c %s\n", stamp, static_cast<long>(now.tv_usec / 1000),
               program_name, static_cast<int>(getpid()), level, message);
}
}  // namespace

void SetLogProgramName(const char* name) { program_name = name; }

void LogInfo(const char* format, ...) {
  va_list args;
  va_start(args, format);
  LogLine('I', format, args);
  va_end(args);
}

void LogWarning(const char* format, ...) {
  va_list args;
  va_start(args, format);
  LogLine('W', format, args);
  va_end(args);
}

void LogError(const char* format, ...) {
  va_list args;
  va_start(args, format);
  LogLine('E', format, args);
  va_end(args);
}

}  // namespace wallet
