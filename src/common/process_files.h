// process_files.h — the small files a server process reads and writes at start:
// its password file and its ready file (shared by wallet-shard and wallet-router).
//
// Example:
//   absl::StatusOr<std::string> password = ReadPasswordFile("/etc/wallet/password");
//   if (!password.ok()) { LogError("%s", ...); return 2; }
//   if (!WriteFileAtomically(ready_file, StrCat(port, "\n"))) { ... }
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace wallet {

// The first line of `path` without its line end (LF or CRLF). NotFound when the file
// cannot be read, InvalidArgument when the first line is empty: an empty password
// would mean "no AUTH", so a bad file must never open a server.
absl::StatusOr<std::string> ReadPasswordFile(const std::string& path);

// Writes `content` to path + ".tmp" and renames it onto `path`, so a reader sees the
// whole content or nothing (ready files polled by scripts and tests).
bool WriteFileAtomically(const std::string& path, const std::string& content);

}  // namespace wallet
