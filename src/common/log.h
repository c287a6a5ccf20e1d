// log.h — one-line operational log messages on stderr:
//   2026-11-21T10:00:00.123Z wallet-shard[4242] I listening on 127.0.0.1:7001
// LogInfo/LogWarning/LogError take printf-style arguments (checked by the compiler).
#pragma once

namespace wallet {

void SetLogProgramName(const char* name);
void LogInfo(const char* format, ...) __attribute__((format(printf, 1, 2)));
void LogWarning(const char* format, ...) __attribute__((format(printf, 1, 2)));
void LogError(const char* format, ...) __attribute__((format(printf, 1, 2)));

}  // namespace wallet
